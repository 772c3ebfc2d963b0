"""The paper's task scores of a policy on simulated episodes, and the demo that shows them."""

"""The lean on-robot runtime (no torch): engines, policy, control loop (not built yet)."""

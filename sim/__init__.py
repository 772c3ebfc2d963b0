"""A simulated ARX arm behind a pseudo-terminal, answering SLCAN byte for byte as the hardware does."""

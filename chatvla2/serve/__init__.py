"""`chatvla2 serve`: a bundle's policy served from GPU machines on Ray Serve (the robot side:
runtime/remote_policy.py; the wire format: contract/wire.py)."""

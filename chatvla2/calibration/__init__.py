"""Measuring the runtime: `chatvla2 bench` (per-stage latency of a bundle's policy against the
PyTorch eager reference, `bench.py`), the decode step's memory roofline (`roofline.py`) and the
reference timing (`reference_timing.py`). Accuracy-vs-latency sweeps and the choice of a
precision per engine (issue 12) will live here too. Imports runtime/, export/ and models/;
nothing below imports it.
"""

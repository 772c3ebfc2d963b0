"""Accuracy-vs-latency measurement and the choice of precision per engine (not built yet)."""

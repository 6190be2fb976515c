"""Benchmarks of the packed runtime against torch (they import torch; the runtime itself does not)."""

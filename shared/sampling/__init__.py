"""Sampling loops MONAI lacks: classifier-free guidance in one doubled batch (and, later, slice stacking)."""

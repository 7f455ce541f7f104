"""Conditioning in one place: per-case features, their tables, and sampling requests."""

from shared import lazy_submodules

__getattr__ = lazy_submodules(__name__)

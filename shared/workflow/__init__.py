"""Project code: pipeline stages, bundle chaining, generation rounds, studies, starter weights, CLIs."""

from shared import lazy_submodules

__getattr__ = lazy_submodules(__name__)

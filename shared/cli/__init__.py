"""Project code: the command-line framework of ``scripts/``.

``arguments`` reads a whole command line against a function's signature before any work (types,
bounds declared beside each flag with :mod:`shared.bounds`, devices); ``command_help`` writes
``--help`` from the signature and docstring; ``runner`` runs a command with one-line errors and
known exit codes (:func:`shared.cli.runner.run_cli`).
"""

from shared import lazy_submodules

__getattr__ = lazy_submodules(__name__)

"""Project code: the main command's pipeline. Its settings (``settings``), the study design and data
ledgers (``design``, ``ledger``, ``demo_recipes``, ``starter_ledgers``), the stages (``stages``,
``chaining``, ``generation_rounds``, ``pair_qc``), the learning curve and the report."""

from shared import lazy_submodules

__getattr__ = lazy_submodules(__name__)

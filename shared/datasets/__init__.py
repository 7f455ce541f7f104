"""A researcher's own data: finding cases in their layouts (``layouts``), mapping their label ids
(``label_rules``), reading them onto the working grid (``reading``). See docs/your_own_data.md."""

from shared import lazy_submodules

__getattr__ = lazy_submodules(__name__)

"""Record which subjects the training stages of a bundle's starter weights learnt from.

Usage::

    python scripts/record_starter_ledger.py ventricle_mask_ldm --stages "{'autoencoder': {...}, 'diffusion': {...}}"

Each stage's data is drawn again from its demo recipe and measured; the subject ids, their
count and the quantity range (ventricle or tumour mL) go into ``starter/manifest.json``
(``ledger``). The main command reads them for its data ledger, the ``pool`` control and the
hold-out check. The recipes of the shipped starters: README, "Starter weights".
"""

from __future__ import annotations

from shared.cli.runner import run_cli
from shared.workflow.starter_ledgers import record_ledger

if __name__ == "__main__":
    run_cli(record_ledger, name="record_starter_ledger")

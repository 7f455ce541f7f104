"""Where does the slice-based LDM lose image fidelity? Its VAE and its diffusion, measured apart.

Usage (from the project root)::

    python scripts/slice_ldm_diagnostics.py bundles/slice_based_ldm_brats/starter \
        outputs/demo/data/tumours_prepared/datalist.json outputs/sbldm_diagnostics

Writes ``diagnostics.json``, ``diagnostics.md``, ``reconstructions.png`` and ``latents.png``
(``shared.evaluation.slice_ldm_diagnostics``).
"""

from __future__ import annotations

from shared.cli.runner import run_cli
from shared.evaluation.slice_ldm_diagnostics import diagnose_slice_ldm

if __name__ == "__main__":
    run_cli(diagnose_slice_ldm, name="slice_ldm_diagnostics")

"""Build the built-in demo datasets (no download): brains with ventricle enlargement, and tumour cases.

Usage (from the project root)::

    python scripts/make_demo_data.py brains  outputs/demo/brains  --n_cases 20 --shape 64,64,64
    python scripts/make_demo_data.py tumours outputs/demo/tumours --n_cases 20 --radius_range_mm 10,25
    python scripts/make_demo_data.py all     outputs/demo          # both, in <dir>/brains and <dir>/tumours

The same cases in the layouts researchers have (to try the "your own data" path)::

    python scripts/make_demo_data.py brats      outputs/demo/tumours/datalist.json outputs/layouts/brats --edition 2023
    python scripts/make_demo_data.py freesurfer outputs/demo/brains/datalist.json  outputs/layouts/subjects
    python scripts/make_demo_data.py synthseg   outputs/demo/brains/datalist.json  outputs/layouts/synthseg

The data of the example study files ``scripts/studies/freesurfer_ventricles.yaml`` and
``brats_tumours.yaml`` (FreeSurfer subjects and BraTS 2021 cases, training and hold-out)::

    python scripts/make_demo_data.py examples   outputs/example_data

Each dataset folder gets ``images/``, ``labels/``, ``datalist.json`` (MONAI format),
``dataset.json`` (parameters, label set) and ``mosaic.png``. The same seed gives
byte-identical arrays. ``--spacing`` is mm per voxel (one number or three); by default a
192 mm field of view is spread over ``--shape``.
"""

from __future__ import annotations

from pathlib import Path

from shared.bounds import Count, Positive, PositiveFloat
from shared.cli.runner import run_cli
from shared.demo.dataset import write_brain_dataset, write_tumour_dataset
from shared.demo.layouts import (
    write_brats_layout,
    write_example_study_data,
    write_freesurfer_layout,
    write_synthseg_layout,
)


def all_datasets(
    output_dir: str,
    n_brains: Count = 20,
    n_tumours: Count = 20,
    shape: tuple[Positive, Positive, Positive] = (64, 64, 64),
    spacing: PositiveFloat | tuple[PositiveFloat, PositiveFloat, PositiveFloat] | None = None,
    seed: Count = 0,
) -> dict[str, str]:
    """Both demo datasets under ``output_dir/brains`` and ``output_dir/tumours``; returns their datalists.

    Args:
        output_dir: the folder that gets ``brains/`` and ``tumours/``.
        n_brains: brains (label map + T1) to write.
        n_tumours: tumour cases (FLAIR + mask) to write.
        shape: the grid ``X,Y,Z`` of both (each at least 16).
        spacing: voxel size in mm, one value or ``X,Y,Z`` (default: a 192 mm field of view).
        seed: random seed of both.
    """
    return {
        "brains": str(write_brain_dataset(Path(output_dir) / "brains", n_brains, shape, spacing, seed)),
        "tumours": str(write_tumour_dataset(Path(output_dir) / "tumours", n_tumours, shape, spacing, seed)),
    }


if __name__ == "__main__":
    run_cli(
        {
            "brains": write_brain_dataset,
            "tumours": write_tumour_dataset,
            "all": all_datasets,
            "brats": write_brats_layout,
            "freesurfer": write_freesurfer_layout,
            "synthseg": write_synthseg_layout,
            "examples": write_example_study_data,
        }
    )

"""Writing the demo datasets in the layouts researchers have, with their real naming and grids.

What the "your own data" path reads (:mod:`shared.datasets.layouts`), written from a demo dataset
(``images/``, ``labels/``, ``datalist.json``) so that every layout can be tried and tested
without downloading anything:

- :func:`write_brats_layout`: BraTS 2021 (``BraTS2021_00000/BraTS2021_00000_flair.nii.gz``,
  ``_seg.nii.gz``, labels 1 necrosis / 2 oedema / 4 enhancing) or 2023 (``BraTS-GLI-00000-000/
  BraTS-GLI-00000-000-t2f.nii.gz``, ``-seg.nii.gz``, labels 1/2/3) case folders on BraTS's grid:
  240 x 240 x 155 voxels of 1 mm, LPS-stored (x and y axes flipped), int16 intensities;
- :func:`write_freesurfer_layout`: a ``SUBJECTS_DIR`` of ``<subject>/mri/T1.mgz`` (uint8) and
  ``aseg.mgz`` in FreeSurfer's conformed space (256^3 voxels of 1 mm, LIA orientation), with
  corpus callosum (251-255) and white-matter hypointensity (77) labels that SynthSeg's class set
  lacks;
- :func:`write_synthseg_layout`: each image on its own grid beside a 1 mm ``_synthseg.nii.gz``.

The tumour sub-regions are drawn from the whole-tumour mask by depth (the inner half necrosis,
then an enhancing rim, the outer third oedema): they exist to be merged back into one mask.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from shared.bounds import Count, Positive
from shared.datasets.layouts import CaseFiles, find_cases
from shared.io import InputError, atomic_folder, load_image, load_label_map, save_volume

#: BraTS's grid: 240 x 240 x 155 voxels of 1 mm.
BRATS_SHAPE: tuple[int, int, int] = (240, 240, 155)

#: FreeSurfer's conformed grid: 256^3 voxels of 1 mm.
CONFORMED_SHAPE: tuple[int, int, int] = (256, 256, 256)

#: Tumour sub-region ids per BraTS edition: (necrosis, oedema, enhancing).
BRATS_EDITIONS: dict[int, tuple[int, int, int]] = {2021: (1, 2, 4), 2023: (1, 2, 3)}

#: FreeSurfer white-matter hypointensities and corpus callosum (central) ids.
WM_HYPOINTENSITY_ID = 77
CORPUS_CALLOSUM_ID = 253


def centred_affine(shape: Sequence[int], axes: Sequence[tuple[int, float]]) -> np.ndarray:
    """Affine of a 1 mm grid of ``shape`` centred at the scanner origin.

    Args:
        shape: voxels per array axis.
        axes: for each array axis, the scanner axis it runs along (0 x, 1 y, 2 z) and its sign
            (``+1``: towards R / A / S).
    """
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    for array_axis, (world_axis, sign) in enumerate(axes):
        affine[world_axis, array_axis] = float(sign)
    centre = (np.asarray(shape, dtype=np.float64) - 1) / 2
    affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


def resample_onto(
    array: np.ndarray, affine: np.ndarray, shape: Sequence[int], target_affine: np.ndarray, order: int
) -> np.ndarray:
    """``array`` (on ``affine``) sampled on the grid ``(shape, target_affine)``; zero outside."""
    mapping = np.linalg.inv(affine) @ target_affine
    return ndimage.affine_transform(
        np.asarray(array, dtype=np.float32),
        mapping[:3, :3],
        offset=mapping[:3, 3],
        output_shape=tuple(int(n) for n in shape),
        order=order,
        mode="constant",
        cval=0.0,
    )


def tumour_subregions(mask: np.ndarray, ids: tuple[int, int, int]) -> np.ndarray:
    """Split a whole-tumour mask ``(X, Y, Z)`` into ``(necrosis, oedema, enhancing)`` ids by depth."""
    depth = ndimage.distance_transform_edt(mask > 0)
    relative = depth / max(float(depth.max()), 1.0)
    necrosis, oedema, enhancing = ids
    regions = np.zeros(mask.shape, dtype=np.int16)
    regions[mask > 0] = oedema
    regions[relative > 0.33] = enhancing
    regions[relative > 0.5] = necrosis
    return regions


def _demo_cases(datalist: str | os.PathLike) -> tuple[CaseFiles, ...]:
    """The image + label files of a demo dataset's datalist (each file checked to exist)."""
    return find_cases(datalist, "datalist").cases


def _to_uint_range(image: np.ndarray, top: float) -> np.ndarray:
    scale = top / max(float(np.percentile(image, 99.9)), 1e-6)
    return np.clip(image * scale, 0, top)


def write_brats_layout(
    datalist: str | os.PathLike, output_dir: str | os.PathLike, edition: Literal[2021, 2023] = 2021
) -> Path:
    """Write the demo tumour cases of ``datalist`` as BraTS case folders; returns ``output_dir``.

    Args:
        datalist: a demo tumour dataset's ``datalist.json`` (``make_demo_data.py tumours``).
        output_dir: the folder of case folders (replaced whole once written).
        edition: 2021 (``_flair`` / ``_seg``, labels 1/2/4) or 2023 (``-t2f`` / ``-seg``, labels 1/2/3).
    """
    if edition not in BRATS_EDITIONS:
        raise InputError(f"BraTS edition: expected one of {sorted(BRATS_EDITIONS)}, got {edition!r}")
    cases = _demo_cases(datalist)
    target = centred_affine(BRATS_SHAPE, ((0, -1.0), (1, -1.0), (2, 1.0)))
    with atomic_folder(output_dir) as partial:
        for index, case in enumerate(tqdm(cases, desc=f"BraTS {edition} layout", disable=None)):
            image, mask = load_image(case.image), load_label_map(case.label)
            flair = resample_onto(image.array, image.affine, BRATS_SHAPE, target, order=1)
            whole = resample_onto(mask.array > 0, mask.affine, BRATS_SHAPE, target, order=1) >= 0.5
            name = f"BraTS2021_{index:05d}" if edition == 2021 else f"BraTS-GLI-{index:05d}-000"
            names = (f"{name}_flair", f"{name}_seg") if edition == 2021 else (f"{name}-t2f", f"{name}-seg")
            regions = tumour_subregions(whole, BRATS_EDITIONS[edition])
            save_volume(partial / name / f"{names[0]}.nii.gz", np.rint(_to_uint_range(flair, 1000.0)), target, np.int16)
            save_volume(partial / name / f"{names[1]}.nii.gz", regions, target, np.int16)
    return Path(output_dir)


def _freesurfer_extras(aseg: np.ndarray) -> np.ndarray:
    """Paint labels of FreeSurfer's ``aseg`` that SynthSeg's classes lack: corpus callosum, WM hypointensities."""
    aseg = aseg.copy()
    white = np.isin(aseg, (2, 41))
    x = np.arange(aseg.shape[0])[:, None, None]
    middle = np.abs(x - (aseg.shape[0] - 1) / 2) <= 2
    aseg[white & middle] = CORPUS_CALLOSUM_ID
    spots = ndimage.binary_erosion(white, iterations=3) & (np.indices(aseg.shape).sum(axis=0) % 23 == 0)
    aseg[ndimage.binary_dilation(spots) & white & ~middle] = WM_HYPOINTENSITY_ID
    return aseg


def write_freesurfer_layout(datalist: str | os.PathLike, output_dir: str | os.PathLike) -> Path:
    """Write the demo brains of ``datalist`` as FreeSurfer subjects (conformed ``.mgz``); returns ``output_dir``.

    Args:
        datalist: a demo brain dataset's ``datalist.json`` (``make_demo_data.py brains``).
        output_dir: the ``SUBJECTS_DIR`` to write (replaced whole once written).
    """
    cases = _demo_cases(datalist)
    lia = centred_affine(CONFORMED_SHAPE, ((0, -1.0), (2, -1.0), (1, 1.0)))
    with atomic_folder(output_dir) as partial:
        for index, case in enumerate(tqdm(cases, desc="FreeSurfer layout", disable=None)):
            image, labels = load_image(case.image), load_label_map(case.label)
            t1 = _to_uint_range(resample_onto(image.array, image.affine, CONFORMED_SHAPE, lia, order=1), 255.0)
            aseg = resample_onto(labels.array, labels.affine, CONFORMED_SHAPE, lia, order=0).astype(np.int32)
            mri = partial / f"sub-{index:03d}" / "mri"
            mri.mkdir(parents=True)
            nib.save(nib.MGHImage(np.rint(t1).astype(np.uint8), lia), str(mri / "T1.mgz"))
            nib.save(nib.MGHImage(_freesurfer_extras(aseg), lia), str(mri / "aseg.mgz"))
    return Path(output_dir)


def write_synthseg_layout(datalist: str | os.PathLike, output_dir: str | os.PathLike) -> Path:
    """Write the demo brains of ``datalist`` as images beside 1 mm ``_synthseg.nii.gz``; returns ``output_dir``.

    Args:
        datalist: a demo brain dataset's ``datalist.json`` (``make_demo_data.py brains``).
        output_dir: the folder of image and segmentation files (replaced whole once written).
    """
    cases = _demo_cases(datalist)
    with atomic_folder(output_dir) as partial:
        for index, case in enumerate(tqdm(cases, desc="SynthSeg layout", disable=None)):
            image, labels = load_image(case.image), load_label_map(case.label)
            shape = tuple(int(round(v)) for v in np.abs(np.diag(labels.affine)[:3]) * np.asarray(labels.array.shape))
            one_mm = centred_affine(shape, ((0, 1.0), (1, 1.0), (2, 1.0)))
            one_mm[:3, 3] += labels.affine[:3, :3] @ ((np.asarray(labels.array.shape) - 1) / 2) + labels.affine[:3, 3]
            segmentation = resample_onto(labels.array, labels.affine, shape, one_mm, order=0)
            save_volume(partial / f"sub-{index:03d}.nii.gz", image.array, image.affine, np.float32)
            save_volume(partial / f"sub-{index:03d}_synthseg.nii.gz", np.rint(segmentation), one_mm, np.int16)
    return Path(output_dir)


def _split_subjects(folder: Path, train: Path, test: Path, n_train: int) -> None:
    """Move the first ``n_train`` entries of ``folder`` (by name) into ``train``, the others into ``test``."""
    for index, entry in enumerate(sorted(folder.iterdir())):
        target = train if index < n_train else test
        target.mkdir(parents=True, exist_ok=True)
        entry.rename(target / entry.name)
    folder.rmdir()


def write_example_study_data(
    output_dir: str | os.PathLike, n_train: Positive = 8, n_test: Positive = 6, seed: Count = 5000
) -> Path:
    """The data of the shipped example study files (``scripts/studies/``); returns ``output_dir``.

    Writes ``freesurfer/train`` and ``freesurfer/test`` (FreeSurfer subjects, conformed ``.mgz``)
    and ``brats/train`` and ``brats/test`` (BraTS 2021 case folders, 240 x 240 x 155 at 1 mm,
    labels 1/2/4): demo subjects of ``seed``, none of which the starter generators learnt from
    (their data is of seed 0). Training and test subjects are distinct.

    Args:
        output_dir: the folder to write (replaced whole once written).
        n_train: training subjects per study.
        n_test: hold-out subjects per study.
        seed: the demo data's seed (0 is the starter generators' data: their hold-out check refuses it).
    """
    from shared.demo.dataset import write_brain_dataset, write_tumour_dataset

    if n_train < 2 or n_test < 1:
        raise InputError(f"examples: need n_train >= 2 and n_test >= 1, got {n_train} and {n_test}")
    n_cases = n_train + n_test
    with atomic_folder(output_dir) as partial:
        brains = write_brain_dataset(partial / "demo_brains", n_cases, seed=seed, validation_fraction=0.0)
        layout = write_freesurfer_layout(brains, partial / "freesurfer_all")
        _split_subjects(layout, partial / "freesurfer" / "train", partial / "freesurfer" / "test", n_train)
        tumours = write_tumour_dataset(partial / "demo_tumours", n_cases, seed=seed, validation_fraction=0.0)
        layout = write_brats_layout(tumours, partial / "brats_all")
        _split_subjects(layout, partial / "brats" / "train", partial / "brats" / "test", n_train)
        for demo in ("demo_brains", "demo_tumours"):
            shutil.rmtree(partial / demo)
    return Path(output_dir)

"""Image fidelity of generated labelled pairs against real ones, as the field measures it, in one call.

:func:`measure_pair_fidelity` takes the generated pairs, the real pairs their generators learnt
from (the reference), and the real training pairs the feature networks learn from, and returns:

- Fréchet distance and MMD in 3D (the real-data nnU-Net's encoder, when its model folder is given)
  and 2.5D (a 2D network trained here on the three planes of the real images), each beside the
  real-vs-real baseline (:mod:`shared.evaluation.image_fidelity`);
- diversity: mean pairwise MS-SSIM of generated against real images;
- the brain-shape measurements of both sets (:mod:`shared.evaluation.brain_shape`);
- the memorisation audit of every generated pair against the reference
  (:mod:`shared.evaluation.memorisation`; image, label and 3D-feature neighbours, or 2.5D
  features when there is no nnU-Net model).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared.bounds import Count, Positive
from shared.evaluation.brain_shape import brain_reference, check_brain, measure_brain
from shared.evaluation.feature_networks import PLANES, NnUNetEncoder, plane_features, train_plane_network
from shared.evaluation.fidelity import percentiles_to_unit
from shared.evaluation.image_fidelity import DEFAULT_RESAMPLES, compare_to_real, diversity, mean_over_planes
from shared.evaluation.memorisation import audit
from shared.io import InputError, load_image, load_label_map, voxel_volume_mm3
from shared.labels import VENTRICLE_LABEL_IDS

Pair = tuple[Path, Path]


def foreground(label: np.ndarray, study: str) -> np.ndarray:
    """The study's structure in a label map: ventricles (their ids, or a binary map) or the whole tumour."""
    if study == "ventricles" and label.max() > 1:
        return np.isin(label, VENTRICLE_LABEL_IDS)
    return label > 0


def _load(pairs: Sequence[Pair]) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    images, labels, voxel_ml = [], [], 0.0
    for image_path, label_path in pairs:
        image = load_image(image_path)
        images.append(image.array.astype(np.float32))
        labels.append(load_label_map(label_path).array)
        voxel_ml = voxel_volume_mm3(image.affine) / 1000.0
    return images, labels, voxel_ml


def distinct_names(paths: Sequence[str | Path]) -> list[str]:
    """The shortest trailing parts of each path that tell the files apart.

    ``round_1/images/pair_0000.nii.gz`` and ``round_2/images/pair_0000.nii.gz`` are named down to
    their rounds (``round_1/images/pair_0000.nii.gz``); files with distinct names keep their names.
    """
    parts = [Path(p).parts for p in paths]
    for depth in range(1, max((len(p) for p in parts), default=1) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


def measure_pair_fidelity(
    generated: Sequence[Pair],
    reference: Sequence[Pair],
    feature_training: Sequence[Pair],
    study: str,
    nnunet_model: str | os.PathLike | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    plane_iterations: int = 400,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Every fidelity figure of ``generated`` against ``reference`` (see the module docstring).

    Args:
        generated: generated ``(image, label)`` files.
        reference: the real pairs the generators learnt from (their training subjects).
        feature_training: real training pairs the 2.5D feature network learns from.
        study: ``ventricles`` or ``tumours`` (the structure the feature network segments, the audit's masks).
        nnunet_model: the real-data nnU-Net model folder (3D features); ``None`` leaves 3D out.
        resamples: real-vs-real splits.
        plane_iterations: training steps of the 2.5D feature network.

    Returns:
        ``{"distances": [rows], "diversity": {...}, "brain": {...}, "memorisation": {...},
        "memorisation_rows": [rows], "features": {...}}``.

    Raises:
        InputError: too few pairs, or grids that differ.
    """
    if len(generated) < 2 or len(reference) < 4:
        raise InputError(f"fidelity: need 2+ generated and 4+ real pairs, got {len(generated)} and {len(reference)}")
    g_images, g_labels, voxel_ml = _load(generated)
    r_images, r_labels, _ = _load(reference)
    t_images, t_labels, _ = _load(feature_training)
    shapes = {im.shape for im in (*g_images, *r_images, *t_images)}
    if len(shapes) != 1:
        raise InputError(f"fidelity: generated and real images on different grids {sorted(shapes)}")
    network = train_plane_network(t_images, [foreground(lab, study) for lab in t_labels], plane_iterations, seed=seed,
                                  device=device)  # fmt: skip
    g_planes = [plane_features(network, im) for im in g_images]
    r_planes = [plane_features(network, im) for im in r_images]
    rows: list[dict[str, Any]] = []
    per_plane = {
        plane: compare_to_real([f[plane] for f in g_planes], [f[plane] for f in r_planes], resamples, seed=seed)
        for plane in PLANES
    }
    for plane, results in per_plane.items():
        rows += [result.row(features=f"2.5D {plane}") for result in results.values()]
    for metric in ("frechet", "mmd"):
        rows.append(mean_over_planes([per_plane[p][metric] for p in PLANES]).row(features="2.5D (mean of planes)"))
    g_3d = r_3d = None
    if nnunet_model is not None:
        encoder = NnUNetEncoder(nnunet_model, device)
        g_3d, r_3d = [encoder(im) for im in g_images], [encoder(im) for im in r_images]
        rows += [result.row(features="3D") for result in compare_to_real(g_3d, r_3d, resamples, seed=seed).values()]
    g_unit = [percentiles_to_unit(im) for im in g_images]
    r_unit = [percentiles_to_unit(im) for im in r_images]
    brain_generated = [measure_brain(im, voxel_ml) for im in g_images]
    brain_real = [measure_brain(im, voxel_ml) for im in r_images]
    brain = brain_reference(brain_real)
    failing = [i for i, shape in enumerate(brain_generated) if check_brain(shape, brain)]
    if g_3d is not None:
        g_features, r_features, feature_kind = np.concatenate(g_3d), np.concatenate(r_3d), "3D"
    else:
        g_features = np.stack([np.concatenate([f[p].mean(axis=0) for p in PLANES]) for f in g_planes])
        r_features = np.stack([np.concatenate([f[p].mean(axis=0) for p in PLANES]) for f in r_planes])
        feature_kind = "2.5D (mean over slices)"
    result = audit(g_unit, [foreground(lab, study) for lab in g_labels], g_features,
                   r_unit, [foreground(lab, study) for lab in r_labels], r_features)  # fmt: skip
    names = distinct_names([image for image, _ in generated])
    reference_names = distinct_names([image for image, _ in reference])
    return {
        "distances": rows,
        "diversity": diversity(g_unit, r_unit, seed=seed),
        "brain": {
            "reference_ml": list(brain.brain_ml_range), "reference_max_slice_jump": brain.max_slice_jump,
            "reference_max_background": brain.max_background,
            "generated_ml": [s.brain_ml for s in brain_generated], "real_ml": [s.brain_ml for s in brain_real],
            "generated_failing": [names[i] for i in failing],
        },
        "memorisation": {**result.summary(), "features": feature_kind},
        "memorisation_rows": result.rows(names, reference_names),
        "features": {"3d": "nnU-Net encoder (real set, seed 0)" if nnunet_model is not None else None,
                     "2.5d": f"2D BasicUNet trained here on {len(t_images)} real training volumes, three planes"},
        "counts": {"generated": len(generated), "reference": len(reference), "feature_training": len(t_images)},
    }  # fmt: skip


def write_distance_report(
    generated: str | os.PathLike,
    real: str | os.PathLike,
    output_dir: str | os.PathLike,
    study: str = "tumours",
    feature_training: str | os.PathLike | None = None,
    nnunet_model: str | os.PathLike | None = None,
    resamples: Positive = DEFAULT_RESAMPLES,
    seed: Count = 0,
    device: str = "cpu",
) -> str:
    """Fréchet distance, MMD, diversity, brain shape and memorisation of generated pairs against real ones.

    Args:
        generated: a pair folder or its ``manifest.csv`` (QC-rejected rows are left out), or a datalist.
        real: a MONAI datalist (every section) or pair folder of the real pairs the generators learnt from.
        output_dir: where ``fidelity.csv``, ``memorisation.csv`` and ``fidelity.json`` go.
        study: ``ventricles`` or ``tumours``: the structure the 2.5D feature network learns to segment
            and the memorisation audit's masks.
        feature_training: real pairs the 2.5D feature network learns from (default: ``real``).
        nnunet_model: a trained nnU-Net 3d_fullres model folder (its encoder gives 3D features); default
            none: 2.5D only.
        resamples: real-vs-real splits behind every interval.
        seed: of the splits and the feature network.
        device: ``cpu`` or ``cuda``.

    Returns:
        The path of ``fidelity.csv``.
    """
    from shared.evaluation.fidelity import pairs_of
    from shared.io import write_csv, write_json

    if study not in ("ventricles", "tumours"):
        raise InputError(f"--study: expected ventricles or tumours, got {study!r}")
    generated_pairs, real_pairs = pairs_of(generated), pairs_of(real)
    training_pairs = pairs_of(feature_training) if feature_training is not None else real_pairs
    result = measure_pair_fidelity(generated_pairs, real_pairs, training_pairs, study, nnunet_model, resamples,
                                   seed=seed, device=device)  # fmt: skip
    out = Path(output_dir)
    write_csv(out / "memorisation.csv", result["memorisation_rows"], list(result["memorisation_rows"][0]))
    write_json(out / "fidelity.json", {k: v for k, v in result.items() if k != "memorisation_rows"})
    return str(
        write_csv(
            out / "fidelity.csv", result["distances"], list(dict.fromkeys(k for r in result["distances"] for k in r))
        )
    )

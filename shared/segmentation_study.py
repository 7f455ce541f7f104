"""The main command's two studies: synthetic labelled pairs -> nnU-Net sets -> models -> hold-out evaluation.

- **Ventricles** (paper 000): train ``ventricle_mask_ldm`` and ``spade_mri_ldm`` on the demo
  brains, generate pairs biased towards enlarged ventricles, assemble real / synthetic /
  augmented nnU-Net sets (binary ventricles), train a small nnU-Net on each, and evaluate on a
  hold-out of brains with enlarged ventricles.
- **Tumours** (paper 003): prepare the demo tumour cases, train ``slice_based_ldm_brats``,
  generate FLAIR + mask pairs with random consistent tumour conditions, assemble real and
  augmented sets (whole tumour), train, evaluate on a hold-out of new tumour cases.

Each step is a stage of :class:`shared.pipeline.StageRunner` (skipped when done with the same
parameters). Bundles run through ``python -m monai.bundle run`` and nnU-Net through
``scripts/train_segmentation.py``, each in its own process (nnU-Net takes its folders from the
environment at import), with their logs and progress bars on this terminal. Models, generated
pairs and nnU-Net folders all stay under the output folder.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shared.chaining import MASK_BUNDLE, ROOT, SPADE_BUNDLE, generate_pairs, run_bundle, run_command
from shared.io import read_csv
from shared.nnunet_dataset import assemble_variants, dataset_id_of, variant_folders

logger = logging.getLogger(__name__)

SBLDM_BUNDLE = ROOT / "bundles" / "slice_based_ldm_brats"
DEMO_PRESET = "configs/presets/demo.yaml"


@dataclass(frozen=True)
class StudySettings:
    """Sizes of the segmentation studies (defaults: a CPU demo in minutes; quality is not claimed).

    Attributes:
        n_generated: synthetic pairs per study; the synthetic and augmented sets take all of them.
        n_holdout: hold-out cases per study (never seen by any generator or segmenter).
        holdout_enlargement: ventricle enlargement range of the ventricle hold-out (demo brains: 1-5).
        generated_c: ``c`` range of the generated ventricle pairs (``c > 1``: larger than any training case).
        guidance_scale: classifier-free guidance of the mask model.
        sampling_steps: DDIM steps of every generator (mask, SPADE and slice-based LDM).
        nnunet_epochs: nnU-Net epochs per model.
        nnunet_iterations: nnU-Net training iterations per epoch.
        nnunet_width: factor on nnU-Net's planned features per stage.
        tumour_shape: working grid of the slice-based LDM (``X, Y, Z``).
        volume_threshold_ml: split of the ventricle evaluation by ground-truth volume.
        device: ``cpu`` or ``cuda`` for the bundles and nnU-Net.
    """

    n_generated: int = 8
    n_holdout: int = 6
    holdout_enlargement: tuple[float, float] = (3.0, 6.0)
    generated_c: tuple[float, float] = (0.5, 1.3)
    guidance_scale: float = 4.0
    sampling_steps: int = 10
    nnunet_epochs: int = 3
    nnunet_iterations: int = 10
    nnunet_width: float = 0.25
    tumour_shape: tuple[int, int, int] = (64, 64, 32)
    volume_threshold_ml: float = 50.0
    device: str = "cpu"

    def params(self) -> dict[str, Any]:
        """JSON-friendly settings (stage parameters)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def train_bundle(bundle: Path, models: Path, datalist: Path, device: str, what: str) -> None:
    """Autoencoder then diffusion of one bundle, demo preset, models in ``models`` (resumable)."""
    overrides = {"datalist": str(datalist), "ckpt_dir": str(models), "tb_dir": str(models / "logs"), "device": device}
    stage_1 = ["configs/train_autoencoder.yaml"]
    run_bundle(bundle, [*stage_1, DEMO_PRESET], overrides, f"{what} autoencoder")
    run_bundle(bundle, [*stage_1, "configs/train_diffusion.yaml", DEMO_PRESET], overrides, f"{what} diffusion")


def train_nnunet(dataset_id: int, nnunet_root: Path, settings: StudySettings) -> None:
    """``scripts/train_segmentation.py`` for one dataset in its own process."""
    command = [
        sys.executable, str(ROOT / "scripts" / "train_segmentation.py"),
        "--dataset_id", str(dataset_id), "--nnunet_root", str(nnunet_root),
        "--epochs", str(settings.nnunet_epochs), "--iterations_per_epoch", str(settings.nnunet_iterations),
        "--val_iterations_per_epoch", "2", "--width_factor", str(settings.nnunet_width),
        "--device", settings.device, "--augmentation_processes", "0",
    ]  # fmt: skip
    run_command(command, ROOT, f"nnU-Net dataset {dataset_id}")


def prediction_folder(nnunet_root: Path, dataset: Path) -> Path:
    """Where ``train_segmentation`` writes a dataset's hold-out predictions."""
    return nnunet_root / "nnUNet_results" / dataset.name / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "predictions_Ts"


def evaluate_study(
    datasets: dict[str, Path], nnunet_root: Path, output_dir: Path, volume_threshold_ml: float
) -> list[dict[str, Any]]:
    """Hold-out evaluation of each variant's model (the hold-out is the same in every dataset)."""
    from shared.segmentation_metrics import evaluate_models, label_volumes_ml

    first = next(iter(datasets.values()))
    return evaluate_models(
        {variant: prediction_folder(nnunet_root, folder) for variant, folder in datasets.items()},
        first / "labelsTs",
        output_dir,
        volume_threshold_ml,
        training_volumes={variant: label_volumes_ml(folder / "labelsTr") for variant, folder in datasets.items()},
    )


def train_and_evaluate(
    runner: Any,
    study: str,
    datasets: dict[str, Path],
    nnunet_root: Path,
    out: Path,
    settings: StudySettings,
    params: dict[str, Any],
) -> None:
    """Stages ``nnunet_<study>_<variant>`` (one model per dataset) and ``evaluate_<study>``."""
    for variant, folder in datasets.items():
        dataset_id = dataset_id_of(folder)
        runner.run(f"nnunet_{study}_{variant}", params, lambda d=dataset_id: train_nnunet(d, nnunet_root, settings))
    runner.run(
        f"evaluate_{study}",
        params,
        lambda: evaluate_study(datasets, nnunet_root, out / "evaluation" / study, settings.volume_threshold_ml),
    )


def run_ventricle_study(runner: Any, out: Path, brains: Path, data: dict[str, Any], settings: StudySettings) -> None:
    """Stages of the ventricle study (see the module docstring); ``brains`` is the demo brain folder."""
    from shared.demo.dataset import write_brain_dataset

    params = {**data, **settings.params()}
    models = out / "models"
    holdout = out / "data" / "holdout_brains"
    generated = out / "generated" / "ventricles"
    nnunet_root = out / "nnunet"
    variants = ("real", "synthetic", "augmented")
    datasets = variant_folders(nnunet_root / "nnUNet_raw", 501, "DemoVentricles", variants)
    runner.run(
        "holdout_brains",
        params,
        lambda: write_brain_dataset(
            holdout, settings.n_holdout, data["shape"], data["spacing"], data["seed"] + 1000,
            settings.holdout_enlargement, validation_fraction=0.0,
        ),
    )  # fmt: skip
    datalist = brains / "datalist.json"
    mask_models, spade_models = models / "ventricle_mask_ldm", models / "spade_mri_ldm"
    runner.run(
        "train_mask_ldm", params, lambda: train_bundle(MASK_BUNDLE, mask_models, datalist, settings.device, "mask LDM")
    )
    runner.run(
        "train_spade_ldm",
        params,
        lambda: train_bundle(SPADE_BUNDLE, spade_models, datalist, settings.device, "SPADE LDM"),
    )
    runner.run(
        "generate_ventricle_pairs",
        params,
        lambda: generate_pairs(
            generated, settings.n_generated, {"uniform": list(settings.generated_c)}, settings.guidance_scale,
            mask_steps=settings.sampling_steps, image_steps=settings.sampling_steps, seed=data["seed"], preset="demo",
            mask_overrides={"ckpt_dir": str(mask_models), "device": settings.device},
            spade_overrides={"ckpt_dir": str(spade_models), "device": settings.device},
        ),
    )  # fmt: skip
    runner.run(
        "ventricle_sets",
        params,
        lambda: assemble_variants(
            501, "DemoVentricles", datalist, generated, holdout, variants, n_synthetic=settings.n_generated,
            labels="ventricles", nnunet_raw=nnunet_root / "nnUNet_raw", overwrite=True,
        ),
    )  # fmt: skip
    train_and_evaluate(runner, "ventricles", datasets, nnunet_root, out, settings, params)


def run_tumour_study(runner: Any, out: Path, tumours: Path, data: dict[str, Any], settings: StudySettings) -> None:
    """Stages of the tumour study (see the module docstring); ``tumours`` is the demo tumour folder."""
    from shared.demo.dataset import write_tumour_dataset
    from shared.tumour_preprocessing import prepare_tumour_dataset

    params = {**data, **settings.params()}
    prepared = out / "data" / "tumours_prepared"
    holdout_raw, holdout = out / "data" / "holdout_tumours_raw", out / "data" / "holdout_tumours"
    models = out / "models" / "slice_based_ldm_brats"
    generated = out / "generated" / "tumours"
    nnunet_root = out / "nnunet"
    variants = ("real", "augmented")
    datasets = variant_folders(nnunet_root / "nnUNet_raw", 511, "DemoTumours", variants)
    shape = settings.tumour_shape
    runner.run("prepare_tumours", params, lambda: prepare_tumour_dataset(tumours / "datalist.json", prepared, shape))

    def make_holdout() -> None:
        write_tumour_dataset(holdout_raw, settings.n_holdout, data["shape"], data["spacing"], data["seed"] + 1000,
                             validation_fraction=0.0)  # fmt: skip
        prepare_tumour_dataset(holdout_raw / "datalist.json", holdout, shape, validation_fraction=0.0)

    runner.run("holdout_tumours", params, make_holdout)
    runner.run(
        "train_slice_ldm",
        params,
        lambda: train_bundle(SBLDM_BUNDLE, models, prepared / "datalist.json", settings.device, "slice-based LDM"),
    )
    runner.run(
        "generate_tumour_pairs",
        params,
        lambda: run_bundle(
            SBLDM_BUNDLE, ["configs/inference.yaml", DEMO_PRESET],
            {"ckpt_dir": str(models), "datalist": str(prepared / "datalist.json"), "output_dir": str(generated),
             "num_samples": settings.n_generated, "num_inference_steps": settings.sampling_steps, "seed": data["seed"],
             "device": settings.device},
            "tumour pairs (slice_based_ldm_brats)",
        ),
    )  # fmt: skip
    runner.run(
        "tumour_sets",
        params,
        lambda: assemble_variants(
            511, "DemoTumours", prepared / "datalist.json", generated, holdout / "datalist.json", variants,
            n_synthetic=settings.n_generated, labels="whole_tumour", nnunet_raw=nnunet_root / "nnUNet_raw",
            overwrite=True, real_sections=["training", "validation"],
        ),
    )  # fmt: skip
    train_and_evaluate(runner, "tumours", datasets, nnunet_root, out, settings, params)


def study_report_lines(out: Path, study: str, title: str) -> list[str]:
    """Markdown lines of one finished study for ``report.md`` (summary table, pictures)."""
    evaluation = out / "evaluation" / study
    summary = read_csv(evaluation / "summary.csv")
    lines = [f"## {title}", ""]
    if (out / "generated" / study / "mosaic.png").is_file():
        lines += [f"Generated pairs (`generated/{study}/`):", "", f"![generated](generated/{study}/mosaic.png)", ""]
    lines += ["| model | subset | n | Dice | IoU | MAE (mL) |", "|---|---|---|---|---|---|"]
    for row in summary:
        if not int(row["n"]):
            continue
        lines.append(
            f"| {row['model']} | {row['subset']} | {row['n']} | {_mean_sd(row, 'dice')} | {_mean_sd(row, 'iou')} "
            f"| {_mean_sd(row, 'abs_volume_error_ml', 2)} |"
        )
    lines += [
        "",
        f"Per case: `evaluation/{study}/per_case.csv`.",
        "",
        f"![errors](evaluation/{study}/errors.png)",
        "",
        f"![training volumes](evaluation/{study}/training_volumes.png)",
        "",
    ]
    return lines


def _mean_sd(row: dict[str, str], metric: str, digits: int = 3) -> str:
    mean, sd = row.get(f"{metric}_mean", ""), row.get(f"{metric}_sd", "")
    if mean == "":
        return "-"
    return f"{float(mean):.{digits}f} ± {float(sd or 0):.{digits}f}"

"""Study stages: one nnU-Net per variant and seed, resumable; evaluation over seeds; variant sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import shared.workflow.segmentation_study as study
from conftest import save_nifti
from shared.io import InputError, read_csv
from shared.workflow.pipeline import StageRunner

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _truth(index: int) -> np.ndarray:
    mask = np.zeros((12, 12, 12), dtype=np.int16)
    mask[2 : 5 + index, 3:8, 3:8] = 1
    return mask


def _datasets(root: Path, variants: tuple[str, ...]) -> dict[str, Path]:
    datasets = study.variant_dataset_folders(root / "nnUNet_raw", 501, "Test", variants)
    for n, folder in enumerate(datasets.values()):
        for i in range(4):
            save_nifti(folder / "labelsTs" / f"test_c{i}.nii.gz", _truth(i), AFFINE)
        for i in range(2 + n):
            save_nifti(folder / "labelsTr" / f"real_t{i}.nii.gz", _truth(i), AFFINE)
    return datasets


def test_every_seed_of_every_variant_is_a_stage_and_resumes_alone(tmp_path, monkeypatch):
    variants = ("real", "augmented")
    root = tmp_path / "nnunet"
    datasets = _datasets(root, variants)
    trained: list[tuple[int, int, int]] = []

    def fake_train(dataset_id, nnunet_root, settings, seed, replicate=0):
        trained.append((dataset_id, seed, replicate))
        folder = next(f for f in datasets.values() if f.name.startswith(f"Dataset{dataset_id}"))
        out = study.prediction_folder(nnunet_root, folder, replicate)
        for i in range(4):  # real: one slab short on every case; augmented: exact, except seed 1 on case 0
            pred = _truth(i).copy()
            if folder.name.endswith("Real"):
                pred[2] = 0
            elif replicate == 1 and i == 0:
                pred[:] = 0
            save_nifti(out / f"test_c{i}.nii.gz", pred, AFFINE)

    monkeypatch.setattr(study, "train_nnunet", fake_train)
    settings = study.StudySettings(nnunet_seeds=2, volume_threshold_ml=1.0)
    runner = StageRunner(tmp_path)
    params = {"seed": 7}
    study.train_and_evaluate(runner, "tumours", datasets, root, tmp_path, settings, params)
    assert trained == [(501, 7, 0), (503, 7, 0), (501, 8, 1), (503, 8, 1)]  # ids follow VARIANT_SOURCES
    assert (root / "nnUNet_results_seed1").is_dir()

    evaluation = tmp_path / "evaluation" / "tumours"
    per_case = read_csv(evaluation / "per_case.csv")
    assert len(per_case) == 2 * 2 * 4 and {r["seed"] for r in per_case} == {"0", "1"}
    summary = {r["model"]: r for r in read_csv(evaluation / "summary.csv") if r["subset"] == "all"}
    assert summary["augmented"]["n"] == "8" and float(summary["augmented"]["dice_mean"]) == pytest.approx(7 / 8)
    comparison = {(r["model"], r["metric"]): r for r in read_csv(evaluation / "comparison.csv")}
    dice = comparison[("augmented", "dice")]
    assert dice["n"] == "4"  # paired on the cases (each a mean over the seeds), not on case x seed
    real_dice = np.mean([float(r["dice"]) for r in per_case if r["model"] == "real"])
    assert float(dice["vs_real_mean_difference"]) == pytest.approx(7 / 8 - real_dice)
    for picture in ("errors.png", "bland_altman.png", "training_volumes.png", "seed_1/per_case.csv"):
        assert (evaluation / picture).is_file(), picture

    # Rerun: nothing is redone. Lose the marker of one seed's model: only that model trains again.
    trained.clear()
    study.train_and_evaluate(runner, "tumours", datasets, root, tmp_path, settings, params)
    assert trained == []
    (tmp_path / ".stages" / "nnunet_tumours_augmented_seed1.json").unlink()
    study.train_and_evaluate(runner, "tumours", datasets, root, tmp_path, settings, params)
    assert trained == [(503, 8, 1)]
    # Other parameters redo every stage that depends on them.
    trained.clear()
    study.train_and_evaluate(runner, "tumours", datasets, root, tmp_path, settings, {"seed": 9})
    assert [t[1] for t in trained] == [9, 9, 10, 10]


def test_variant_sets_take_their_pairs_from_the_named_folders(tmp_path):
    from shared.demo.dataset import write_tumour_dataset
    from shared.io import write_csv
    from shared.segmentation.classical_augmentation import write_augmented_pairs

    real = write_tumour_dataset(tmp_path / "real", 3, (24, 24, 24), None, 0, validation_fraction=0.0)
    test = write_tumour_dataset(tmp_path / "test", 2, (24, 24, 24), None, 5, validation_fraction=0.0)
    classical = write_augmented_pairs(real, tmp_path / "classical", copies=2).parent
    generated = tmp_path / "generated"
    rows = [{"image": f"../real/images/tumour_00{i}.nii.gz", "label": f"../real/labels/tumour_00{i}.nii.gz",
             "qc_status": status} for i, status in enumerate(("accepted", "rejected", "accepted"))]  # fmt: skip
    write_csv(generated / "manifest.csv", rows, ["image", "label", "qc_status"])
    variants = ("real", "real_classical", "synthetic", "augmented", "augmented_classical")
    datasets = study.variant_dataset_folders(tmp_path / "raw", 511, "T", variants)
    written = study.assemble_study_sets(
        datasets, real, test, {"generated": generated, "classical": classical}, tmp_path / "merged",
        labels="whole_tumour", num_workers=1, progress=False,
    )  # fmt: skip
    counts = {v: len(list((folder / "labelsTr").iterdir())) for v, folder in written.items()}
    assert counts == {"real": 3, "real_classical": 3 + 6, "synthetic": 2, "augmented": 3 + 2,
                      "augmented_classical": 3 + 6 + 2}  # fmt: skip
    assert written["augmented_classical"].name == "Dataset516_TAugmentedClassical"
    assert all(len(list((f / "labelsTs").iterdir())) == 2 for f in written.values())


def test_settings_refuse_unknown_variants_and_seed_counts():
    with pytest.raises(InputError, match="tumour variants"):
        study.StudySettings(tumour_variants=("real", "real_dr"))
    with pytest.raises(InputError, match="need 'real'"):
        study.StudySettings(ventricle_variants=("synthetic",))
    with pytest.raises(InputError, match="nnunet_seeds"):
        study.StudySettings(nnunet_seeds=0)


def test_retraining_a_generator_repeats_its_recipe_continuations_in_order(tmp_path, monkeypatch):
    recipe = {"preset": "demo", "overrides": {"diffusion_epochs": 4, "tumour_loss_weight": 50},
              "continuations": [{"diffusion_epochs": 6, "tumour_loss_weight": 5}, {"diffusion_epochs": 8}]}  # fmt: skip
    monkeypatch.setattr(study, "starter_recipe", lambda bundle: recipe)
    calls = []
    monkeypatch.setattr(
        study, "run_bundle", lambda _bundle, configs, values, what: calls.append((configs, values, what))
    )
    study.train_bundle(Path("b"), tmp_path / "models", tmp_path / "datalist.json", "cpu", "slice LDM")
    names = [what for _, _, what in calls]
    assert names == ["slice LDM autoencoder", "slice LDM diffusion", "slice LDM diffusion (continuation 1)",
                     "slice LDM diffusion (continuation 2)"]  # fmt: skip
    weights = [(values["diffusion_epochs"], values["tumour_loss_weight"]) for _, values, _ in calls]
    assert weights == [(4, 50), (4, 50), (6, 5), (8, 50)]  # each continuation over the recipe, not over the last one
    assert all(values["ckpt_dir"] == str(tmp_path / "models") for _, values, _ in calls)
    assert calls[1][0] == calls[3][0] == ["configs/train_autoencoder.yaml", "configs/train_diffusion.yaml",
                                          "configs/presets/demo.yaml"]  # fmt: skip

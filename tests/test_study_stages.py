"""Study stages: variant sets from their named sources, generator recipes, the scales' settings."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

import shared.workflow.stages as stages
from shared.io import InputError, read_datalist, write_csv
from shared.workflow.settings import SCALES, VARIANTS, resolve_settings


def test_variant_sets_take_their_pairs_from_the_named_folders(tmp_path):
    from shared.demo.dataset import write_tumour_dataset
    from shared.segmentation.classical_augmentation import write_augmented_pairs
    from shared.workflow.ledger import read_ledger

    real = write_tumour_dataset(tmp_path / "real", 3, (24, 24, 24), None, 0, validation_fraction=0.0)
    pool = write_tumour_dataset(tmp_path / "pool", 4, (24, 24, 24), None, 7, validation_fraction=0.0)
    test = write_tumour_dataset(tmp_path / "test", 2, (24, 24, 24), None, 5, validation_fraction=0.0)
    classical = write_augmented_pairs(real, tmp_path / "classical", copies=2).parent
    generated = tmp_path / "generated"
    verdicts = ("accepted", "rejected", "accepted")
    rows = [{"image": f"../real/images/tumour_00{i}.nii.gz", "label": f"../real/labels/tumour_00{i}.nii.gz",
             "qc_status": status, "case": f"r1_pair_{i}"} for i, status in enumerate(verdicts)]  # fmt: skip
    write_csv(generated / "manifest.csv", rows, ["image", "label", "qc_status", "case"])
    baseline = tmp_path / "generated_3d_ldm"  # the 3D-LDM baseline's pairs: one accepted
    write_csv(baseline / "manifest.csv", [{**rows[0], "case": "pair_9"}], ["image", "label", "qc_status", "case"])
    variants = ("real", "pool", "real_classical", "synthetic", "augmented", "augmented_classical", "pool_augmented",
                "synthetic_3d_ldm", "augmented_3d_ldm")  # fmt: skip
    datasets = stages.variant_dataset_folders(tmp_path / "raw", 511, "T", variants)
    sources = {"real": real, "pool": pool, "holdout": test, "generated": generated, "classical": classical,
               "generated_3d_ldm": baseline}  # fmt: skip
    for variant, folder in datasets.items():
        stages.assemble_variant(variant, folder, tmp_path, "tumours", sources)
    counts = {v: len(list((folder / "labelsTr").iterdir())) for v, folder in datasets.items()}
    assert counts == {"real": 3, "pool": 4, "real_classical": 3 + 6, "synthetic": 2, "augmented": 3 + 2,
                      "augmented_classical": 3 + 6 + 2, "pool_augmented": 4 + 2, "synthetic_3d_ldm": 1,
                      "augmented_3d_ldm": 3 + 1}  # fmt: skip
    assert datasets["augmented_classical"].name == "Dataset516_TAugmentedClassical"
    assert datasets["pool_augmented"].name == "Dataset518_TPoolAugmented"
    assert datasets["augmented_3d_ldm"].name.startswith("Dataset520_")  # appended: no earlier id moved
    assert all(len(list((f / "labelsTs").iterdir())) == 2 for f in datasets.values())
    assert sorted(p.name for p in (datasets["synthetic"] / "labelsTr").iterdir()) == [
        "syn_r1_pair_0.nii.gz", "syn_r1_pair_2.nii.gz"  # named by the manifest's case column
    ]  # fmt: skip
    ledgers = {v: read_ledger(folder / "ledger.json") for v, folder in datasets.items()}
    assert ledgers["augmented_classical"].training == tuple(f"demo-tumour-s0-{i:03d}" for i in range(3))
    assert ledgers["augmented_classical"].synthetic_pairs == 2 and ledgers["augmented_classical"].via == ("slice LDM",)
    assert ledgers["real_classical"].synthetic_pairs == 0  # classical copies are the real subjects' own
    assert ledgers["augmented_3d_ldm"].via == ("3D-LDM",) and ledgers["augmented_3d_ldm"].synthetic_pairs == 1
    assert ledgers["augmented"].via == ("slice LDM",)
    assert ledgers["pool"].training == tuple(f"demo-tumour-s7-{i:03d}" for i in range(4))
    assert ledgers["synthetic"].training == () and ledgers["synthetic"].value_range is None


def test_settings_come_from_one_table_and_refuse_unknown_values():
    study = resolve_settings("study")
    assert study.nnunet_seeds == 3 and study.brains.low == 1.0 and study.brains.high == 2.0
    assert study.schedule("tumours").epochs == 12 and study.schedule("ventricles").epochs == 16
    assert resolve_settings("study", nnunet_epochs=5).schedule("tumours").epochs == 5  # one flag, both studies
    assert study.ventricle_qc.max_c_error == 0.35  # pair_qc's default: the scale overrides nothing
    assert [p.first_index for p in study.ventricle_holdout] == [0, 24]
    assert set(SCALES["study"]) == set(SCALES["demo"])
    assert all(v in VARIANTS for s in ("ventricle_variants", "tumour_variants") for v in SCALES["study"][s])
    with pytest.raises(InputError, match="tumours variants"):
        resolve_settings("study", tumour_variants=("real", "real_dr"))
    with pytest.raises(InputError, match="need 'real'"):
        resolve_settings("study", ventricle_variants=("synthetic",))
    with pytest.raises(InputError, match="nnunet_seeds"):
        resolve_settings("study", nnunet_seeds=0)
    with pytest.raises(InputError, match="--generators_from 'both'"):
        resolve_settings("study", generators_from="both")
    with pytest.raises(InputError, match="--holdout_size: not a setting"):
        resolve_settings("study", holdout_size=3)
    with pytest.raises(InputError, match="not a ventricles tolerance"):
        resolve_settings("study", ventricle_qc={"max_volume_error": 0.1})


def test_retraining_a_generator_repeats_its_recipe_continuations_in_order(tmp_path, monkeypatch):
    recipe = {"preset": "demo", "overrides": {"diffusion_epochs": 4, "tumour_loss_weight": 50},
              "continuations": [{"diffusion_epochs": 6, "tumour_loss_weight": 5}, {"diffusion_epochs": 8}]}  # fmt: skip
    calls = []
    monkeypatch.setattr(
        stages, "run_bundle", lambda _bundle, configs, values, what: calls.append((configs, values, what))
    )
    stages.train_bundle(Path("b"), tmp_path / "models", tmp_path / "datalist.json", "cpu", "slice LDM", recipe)
    names = [what for _, _, what in calls]
    assert names == ["slice LDM autoencoder", "slice LDM diffusion", "slice LDM diffusion (continuation 1)",
                     "slice LDM diffusion (continuation 2)"]  # fmt: skip
    weights = [(values["diffusion_epochs"], values["tumour_loss_weight"]) for _, values, _ in calls]
    assert weights == [(4, 50), (4, 50), (6, 5), (8, 50)]  # each continuation over the recipe, not over the last one
    assert all(values["ckpt_dir"] == str(tmp_path / "models") for _, values, _ in calls)
    assert calls[1][0] == calls[3][0] == ["configs/train_autoencoder.yaml", "configs/train_diffusion.yaml",
                                          "configs/presets/demo.yaml"]  # fmt: skip


def test_the_data_scarce_recipe_is_the_starters_with_the_scales_epochs():
    pool = stages.generator_recipe("slice_based_ldm_brats", resolve_settings("study"))
    real = stages.generator_recipe("slice_based_ldm_brats", resolve_settings("study", generators_from="real"))
    scarce = SCALES["study"]["scarce_recipes"]["slice_based_ldm_brats"]
    assert pool["preset"] == real["preset"] == "demo"
    epochs = {k: scarce[k] for k in ("autoencoder_epochs", "diffusion_epochs")}
    assert real["overrides"] == {**pool["overrides"], **epochs}
    assert real["continuations"] == scarce["continuations"] != pool["continuations"]
    mask = stages.generator_recipe("ventricle_mask_ldm", resolve_settings("study", generators_from="real"))
    assert (
        mask["overrides"]["autoencoder_epochs"]
        == SCALES["study"]["scarce_recipes"]["ventricle_mask_ldm"]["autoencoder_epochs"]
    )


def test_named_weights_bring_their_own_recipe_and_a_study_files_recipe_replaces_the_starters(tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    weights.mkdir()
    manifest = {"preset": "demo", "overrides": {"diffusion_spade_hidden": 8}, "files": {"model.pt": {"sha256": "0"}}}
    (weights / "manifest.json").write_text(json.dumps(manifest))
    named = replace(resolve_settings("study"), generator_weights={"spade_mri_ldm": str(weights)})
    assert stages.generator_recipe("spade_mri_ldm", named) == {
        "preset": "demo",
        "overrides": {"diffusion_spade_hidden": 8},
        "continuations": [],
    }  # the folder's manifest, not the bundle's starter (science, hidden 16)
    assert stages.generator_recipe("spade_mri_ldm", resolve_settings("study"))["preset"] == "science"
    paper = replace(
        resolve_settings("study", generators_from="real"),
        generator_recipes={"spade_mri_ldm": {"preset": "paper", "overrides": {"diffusion_epochs": 2}}},
    )
    recipe = stages.generator_recipe("spade_mri_ldm", paper)  # the scale's data-scarce epochs do not apply to it
    assert recipe == {"preset": "paper", "overrides": {"diffusion_epochs": 2}, "continuations": []}
    calls = []
    monkeypatch.setattr(stages, "run_bundle", lambda _bundle, configs, values, what: calls.append(configs))
    stages.train_bundle(Path("b"), tmp_path / "models", tmp_path / "datalist.json", "cpu", "SPADE LDM", recipe)
    autoencoder = ["configs/train_autoencoder.yaml"]
    assert calls == [autoencoder, [*autoencoder, "configs/train_diffusion.yaml"]]  # no preset overlay


def test_the_pool_of_several_recipes_is_their_training_subjects_under_distinct_case_names(tmp_path):
    from shared.segmentation.nnunet_dataset import assemble_dataset
    from shared.workflow.demo_recipes import DemoRecipe
    from shared.workflow.design import StudyPlan

    recipes = (DemoRecipe("tumours", 3, (24, 24, 24), 0, 0.34), DemoRecipe("tumours", 2, (24, 24, 24), 7, 0.0))
    pool = tuple(s for r in recipes for s in r.subjects()["training"])
    assert pool == ("demo-tumour-s0-000", "demo-tumour-s0-001", "demo-tumour-s7-000", "demo-tumour-s7-001")
    plan = StudyPlan((), (), (), (), pool, recipes)
    datalist = stages.write_pool(tmp_path, "tumours", plan)
    dataset = assemble_dataset("real", 517, "Pool", datalist, nnunet_raw=tmp_path / "raw", labels="whole_tumour",
                               num_workers=1, progress=False)  # fmt: skip
    names = sorted(p.name for p in (dataset / "labelsTr").iterdir())
    assert names == ["real_tumour_000_s0.nii.gz", "real_tumour_000_s7.nii.gz", "real_tumour_001_s0.nii.gz",
                     "real_tumour_001_s7.nii.gz"]  # fmt: skip
    with pytest.raises(InputError, match="do not give their ledgers' subjects"):
        stages.write_pool(
            tmp_path / "other", "tumours", StudyPlan((), (), (), (), (*pool, "demo-tumour-s9-000"), recipes)
        )


def test_a_generator_resumes_only_checkpoints_of_its_own_recipe_seed_and_data(tmp_path):
    models = tmp_path / "models"
    training = {
        "recipe": {"preset": "science", "overrides": {"diffusion_epochs": 1000}},
        "seed": 0,
        "datalist_sha256": "a",
    }
    models.mkdir()
    (models / "starter_manifest.json").write_text("{}")  # starter weights of an earlier pool-protocol run
    (models / "diffusion_checkpoint_epoch=600.pt").write_text("old")
    stages.keep_only_checkpoints_of(models, training)
    assert sorted(p.name for p in models.iterdir()) == [stages.TRAINING_RECORD]
    (models / "diffusion_checkpoint_epoch=10.pt").write_text("this recipe's")  # interrupted: resumed
    stages.keep_only_checkpoints_of(models, training)
    assert (models / "diffusion_checkpoint_epoch=10.pt").is_file()
    for changed in ({"seed": 1}, {"datalist_sha256": "b"}, {"recipe": {"preset": "science", "overrides": {}}}):
        (models / "diffusion_checkpoint_epoch=10.pt").write_text("this recipe's")
        stages.keep_only_checkpoints_of(models, training)
        stages.keep_only_checkpoints_of(models, {**training, **changed})
        assert not (models / "diffusion_checkpoint_epoch=10.pt").exists()
        stages.keep_only_checkpoints_of(models, training)


def test_the_pool_drawn_again_must_hold_the_quantity_range_of_each_generators_ledger(tmp_path):
    from shared.workflow.demo_recipes import DemoRecipe
    from shared.workflow.design import StudyPlan
    from shared.workflow.ledger import Ledger, value_range

    recipe = DemoRecipe("tumours", 3, (24, 24, 24), 0, 0.34)
    pool = tuple(recipe.subjects()["training"])
    probe = stages.write_pool(tmp_path / "probe", "tumours", StudyPlan((), (), (), (), pool, (recipe,)))
    drawn = value_range([item["label"] for item in read_datalist(probe)], "tumours")
    right = Ledger("slice LDM diffusion", "tumours", pool, value_range=drawn)
    stages.write_pool(tmp_path / "right", "tumours", StudyPlan((right,), (), (), (), pool, (recipe,)))
    wrong = Ledger("slice LDM diffusion", "tumours", pool, value_range=(drawn[0], drawn[1] + 1.0))
    with pytest.raises(InputError, match="slice LDM diffusion's data drawn again holds"):
        stages.write_pool(tmp_path / "wrong", "tumours", StudyPlan((wrong,), (), (), (), pool, (recipe,)))

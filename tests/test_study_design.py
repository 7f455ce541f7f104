"""Study design: data ledgers, the hold-out no model saw, the pool control, stage keys, the learning curve.

The whole study runs with bundle runs and nnU-Net replaced (``study_fakes``): data, starter
installs, ledgers, QC rounds, nnU-Net sets, the design check, evaluation and the report are real.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import study_fakes

from shared.io import InputError, read_csv, read_json
from shared.workflow.demo_recipes import parts_subjects
from shared.workflow.design import plan_study
from shared.workflow.ledger import check_unseen, read_ledger
from shared.workflow.pipeline import run_studies
from shared.workflow.settings import GENERATORS_FROM, SCALES, STUDIES, resolve_settings, with_schedule

SMALL = {
    "n_brains": 6, "n_tumours": 6, "n_generated": 4, "nnunet_seeds": 2,
    "fidelity": {"feature_iterations": 20, "resamples": 20},
    "ventricle_holdout": ((3, 4.0, 7.0), (2, 1.0, 2.0)), "tumour_holdout": ((3, None, None), (2, 28.0, 34.0)),
}  # fmt: skip


@pytest.mark.parametrize("scale", list(SCALES))
@pytest.mark.parametrize("protocol", GENERATORS_FROM)
@pytest.mark.parametrize("study", STUDIES)
def test_no_hold_out_subject_is_in_any_models_ledger(scale, protocol, study):
    settings = resolve_settings(scale, generators_from=protocol)
    plan = plan_study(settings, study)
    check_unseen(plan.holdout, plan.ledgers())  # raises on an overlap
    seen = set().union(*(ledger.seen() for ledger in plan.ledgers()))
    assert plan.holdout and not seen & set(plan.holdout)
    assert len(set(plan.holdout)) == len(plan.holdout) == sum(p.n_cases for p in settings.holdout(study))
    assert {ledger.model.split(" (seed")[0] for ledger in plan.segmenters} == {
        f"nnU-Net {v}" for v in settings.trained_variants(study)
    }
    if protocol == "real":  # the data-scarce protocol: every generator learns from the real subjects only
        assert set(plan.pool) == set(plan.real)
        assert all(set(ledger.training) == set(plan.real) for ledger in plan.generators)
    else:  # the starters' pool holds the real training subjects and more
        assert len(plan.pool) > len(plan.real)


def test_a_hold_out_that_shares_a_subject_with_a_ledger_stops_the_study_before_any_segmenter(tmp_path, monkeypatch):
    settings = resolve_settings("study", generators_from="real", **SMALL)
    same_subjects = tuple(replace(part, seed=settings.seed) for part in settings.ventricle_holdout)
    calls: list = []
    study_fakes.install(monkeypatch, tmp_path, calls)
    with pytest.raises(InputError, match=r"ventricles hold-out: subject demo-brain-s0-00\d was seen by mask LDM"):
        run_studies(tmp_path, replace(settings, ventricle_holdout=same_subjects), ["ventricles"])
    assert not [c for c in calls if c[0] == "train_nnunet"]


@pytest.fixture(scope="module")
def pool_study(tmp_path_factory):
    """The ventricle study with the starter generators and the pool control, run once."""
    out = tmp_path_factory.mktemp("pool_study")
    settings = resolve_settings("study", generators_from="pool", **SMALL)
    calls: list = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        study_fakes.install(monkeypatch, out, calls)
        run_studies(out, settings, ["ventricles"])
    return out, settings, calls


@pytest.mark.slow
def test_generation_uses_each_generators_solver_from_the_settings(pool_study):
    _, settings, calls = pool_study
    mask, image = settings.generation.samplers["mask"], settings.generation.samplers["image"]
    assert (mask.sampler, mask.steps, image.sampler, image.steps) == ("dpm_solver", 5, "dpm_solver", 15)
    generated = [c[3] for c in calls if c[0] == "generate_pairs"]
    assert generated and all(
        g == {"mask_sampler": "dpm_solver", "mask_steps": 5, "image_sampler": "dpm_solver", "image_steps": 15}
        for g in generated
    )


@pytest.mark.slow
def test_every_model_writes_the_ledger_the_plan_gives(pool_study):
    out, settings, _ = pool_study
    plan = plan_study(settings, "ventricles")
    planned = {ledger.model: set(ledger.training) for ledger in plan.ledgers()}
    for bundle, stage in [
        (b, s) for b in ("ventricle_mask_ldm", "spade_mri_ldm") for s in ("autoencoder", "diffusion")
    ]:
        ledger = read_ledger(out / "models" / bundle / f"ledger_{stage}.json")
        assert set(ledger.training) == planned[ledger.model] and len(ledger.training) == 86
        assert ledger.value_range == pytest.approx((13.176, 71.496))
    models = sorted(
        (out / "nnunet").glob("nnUNet_results*/Dataset*/nnUNetTrainer__nnUNetPlans__3d_fullres/ledger.json")
    )
    assert len(models) == len(settings.trained_variants("ventricles")) * settings.nnunet_seeds
    for path in models:
        ledger = read_ledger(path)
        assert set(ledger.training) == planned[ledger.model], ledger.model
    pool = read_ledger(next((out / "nnunet" / "nnUNet_raw").glob("Dataset507_*")) / "ledger.json")
    assert len(pool.training) == 86 and pool.synthetic_pairs == 0  # exactly the generators' training subjects
    augmented = read_ledger(next((out / "nnunet" / "nnUNet_raw").glob("Dataset508_*")) / "ledger.json")
    assert (
        len(augmented.training) == 86 and augmented.synthetic_pairs == 4 and augmented.via == ("mask LDM", "SPADE LDM")
    )
    design = read_json(out / "evaluation" / "ventricles" / "design.json")
    assert design["bins"]["data_range"] == pytest.approx([13.176, 71.496])
    real = read_ledger(next((out / "nnunet" / "nnUNet_raw").glob("Dataset501_*")) / "ledger.json")
    assert design["bins"]["real_range"] == pytest.approx(list(real.value_range)) and real.value_range[1] < 71.496
    holdout = set(design["holdout"]["training"])
    assert holdout == set(plan.holdout) and all(not holdout & set(entry["training"]) for entry in design["ledgers"])


@pytest.mark.slow
def test_report_gives_the_ledger_every_variant_and_the_bins(pool_study):
    out, settings, _ = pool_study
    report = (out / "report.md").read_text()
    for heading in ("## Answer", "### Data ledger", "### Settings fixed before the run", "### Per hold-out bin (Dice)"):
        assert heading in report
    assert "| pool_augmented - pool |" in report and "| mask LDM diffusion | starter weights: 96 demo brains" in report
    comparison = read_csv(out / "evaluation" / "ventricles" / "comparison.csv")
    dice = {(r["model"], r["subset"]): r for r in comparison if r["metric"] == "dice"}
    for variant in settings.study_variants("ventricles"):
        row = dice[(variant, "all")]
        assert int(row["n_seeds"]) == 2 and int(row["n_cases"]) == 5 and row["seed_sd"] != ""
        if variant != "real":
            assert row["vs_real_p_holm"] != "" and float(row["vs_real_p_holm"]) >= float(row["vs_real_p"])
    per_case = read_csv(out / "evaluation" / "ventricles" / "per_case.csv")
    bins = read_json(out / "evaluation" / "ventricles" / "design.json")["bins"]
    (real_low, real_high), (low, high) = bins["real_range"], bins["data_range"]
    for row in per_case:
        truth = float(row["truth_ml"])
        expected = "inside" if real_low <= truth <= real_high else "pool_only" if low <= truth <= high else "beyond"
        assert row["bin"] == expected
    counts = {b: sum(1 for r in per_case if r["bin"] == b and r["model"] == "real" and r["seed"] == "0")
              for b in ("inside", "pool_only", "beyond")}  # fmt: skip
    assert sum(counts.values()) == 5 and counts["beyond"] >= 1
    for subset, n in counts.items():
        assert (int(dice[("real", subset)]["n_cases"]) == n) if n else (("real", subset) not in dice)
    figures = json.loads((out / "figures.json").read_text())
    assert figures["ventricles"]["generators_from"] == "pool" and "pool" in figures["ventricles"]["segmentation"]
    # image fidelity against the generators' data: the fakes' pairs are copies of real brains, so all are flagged
    fidelity = read_json(out / "evaluation" / "ventricles" / "fidelity.json")
    assert fidelity["counts"] == {"generated": 4, "reference": 86, "feature_training": 6}
    assert fidelity["memorisation"]["flagged"] == fidelity["memorisation"]["samples"] == 4
    distances = read_csv(out / "evaluation" / "ventricles" / "fidelity.csv")
    assert {r["features"] for r in distances} >= {"2.5D axial", "2.5D (mean of planes)"}
    assert "### Image fidelity" in report and "**4 of 4 samples flagged**" in report


@pytest.mark.slow
def test_another_nnunet_learning_rate_reruns_the_segmenters_and_nothing_before_them(pool_study, monkeypatch):
    out, settings, _ = pool_study
    markers = {p.stem: p.stat().st_mtime_ns for p in (out / ".stages").glob("*.json")}
    calls: list = []
    study_fakes.install(monkeypatch, out, calls)
    run_studies(out, with_schedule(settings, initial_lr=1e-3), ["ventricles"])
    rerun = {p.stem for p in (out / ".stages").glob("*.json") if p.stat().st_mtime_ns != markers.get(p.stem)}
    nnunet = {name for name in markers if name.startswith("nnunet_")}
    assert rerun == nnunet | {"evaluate_ventricles", "fidelity_ventricles", "report"}  # 3D features: the real model
    assert {c[3] for c in calls if c[0] == "train_nnunet"} == {1e-3} and len(nnunet) == 12
    assert not [c for c in calls if c[0] != "train_nnunet"]  # no generation, no bundle run
    # the QC rounds stay on disk for a rerun: finished samples are generated again only if their settings change
    assert (out / "generated" / "ventricles" / "rounds" / "round_0" / "manifest.csv").is_file()
    # a lost marker of one seed's model (as after Ctrl-C): only that model trains again
    calls.clear()
    (out / ".stages" / "nnunet_ventricles_augmented_seed1.json").unlink()
    run_studies(out, with_schedule(settings, initial_lr=1e-3), ["ventricles"])
    assert [c[:3] for c in calls] == [("train_nnunet", 503, 1)]


def _tumour_study(tmp_path, monkeypatch, protocol: str) -> list:
    """The study-scale tumour study (fakes, ``SMALL``) with generators from ``protocol``; the fakes' calls."""
    calls: list = []
    study_fakes.install(monkeypatch, tmp_path, calls)
    run_studies(tmp_path, resolve_settings("study", generators_from=protocol, **SMALL), ["tumours"])
    return calls


@pytest.mark.slow
def test_the_real_protocol_trains_every_generator_on_the_real_subjects_and_shares_pool_with_real(tmp_path, monkeypatch):
    calls = _tumour_study(tmp_path, monkeypatch, "real")
    trained = [c for c in calls if c[0] == "run_bundle" and "pairs" not in c[2]]
    slice_ldm = ["slice LDM autoencoder", "slice LDM diffusion", "slice LDM diffusion (continuation 1)"]
    assert [c[2] for c in trained] == [*slice_ldm, *(w.replace("slice LDM", "3D-LDM") for w in slice_ldm)]
    sampled = [c[3] for c in calls if c[0] == "run_bundle" and "pairs" in c[2]]
    assert sampled and all((s["sampler"], s["num_inference_steps"]) == ("ddim", 10) for s in sampled)
    generators = read_json(tmp_path / "data" / "tumours_prepared" / "generators_datalist.json")
    assert len(generators["training"]) == 6 and len(generators["validation"]) == 2
    ledger = read_ledger(tmp_path / "models" / "slice_based_ldm_brats" / "ledger_diffusion.json")
    assert ledger.training == tuple(f"demo-tumour-s0-{i:03d}" for i in range(6))
    # the 3D-LDM baseline: the slice LDM's recipe and data, the baseline overlay, half its autoencoder epochs
    baseline = [c for c in trained if c[2].startswith("3D-LDM")]
    assert all("configs/baseline_3d_ldm.yaml" in c[4] for c in baseline)
    assert all(c[3]["datalist"] == trained[0][3]["datalist"] for c in baseline)
    assert baseline[0][3]["autoencoder_epochs"] == round(trained[0][3]["autoencoder_epochs"] * 0.5)
    assert read_ledger(tmp_path / "models" / "3d_ldm" / "ledger_diffusion.json").training == ledger.training
    pair_calls = [c for c in calls if c[0] == "run_bundle" and "pairs" in c[2]]
    seeds = {what: [c[3]["seed"] for c in pair_calls if c[2] == what] for what in {c[2] for c in pair_calls}}
    assert seeds["tumour pairs (3D-LDM)"][0] == seeds["tumour pairs (slice_based_ldm_brats)"][0]  # same requests
    design = read_json(tmp_path / "evaluation" / "tumours" / "design.json")
    assert {"3D-LDM autoencoder", "3D-LDM diffusion"} <= {entry["model"] for entry in design["ledgers"]}
    sets = {entry["model"]: entry for entry in design["ledgers"]}
    assert sets["nnU-Net augmented_3d_ldm"]["via"] == ["3D-LDM"] and sets["nnU-Net augmented"]["via"] == ["slice LDM"]
    table1 = read_csv(tmp_path / "evaluation" / "tumours" / "table1.csv")
    assert [row["method"] for row in table1] == ["SBLDM", "3D-LDM"]
    assert float(table1[1]["params_m"]) == 8e-6  # the fake's saved tensors: 3 + 5 numbers
    comparison = read_csv(tmp_path / "evaluation" / "tumours" / "comparison.csv")
    pool = [r for r in comparison if r["model"] == "pool"]
    assert pool and all(r["same_as"] == "real" for r in pool)  # the same models: not trained twice
    assert not list((tmp_path / "nnunet" / "nnUNet_raw").glob("Dataset517_*"))
    report = (tmp_path / "report.md").read_text()
    assert "pool_augmented - pool (= augmented - real)" in report and "`pool` = `real`" in report
    assert "### Table 1: the generators at this study's grid" in report and "| 3D-LDM | ddim | 10 |" in report
    assert "augmented_3d_ldm" in report and "![tumours_3d_ldm](generated/tumours_3d_ldm/mosaic.png)" in report
    assert "3d_ldm trained in this run (the slice LDM's data: the real set)" in report


def test_learning_curve_trains_and_validates_on_real_training_subjects_only(tmp_path, monkeypatch):
    from shared.workflow.learning_curve import learning_curve, split_real_set

    for scale in SCALES:
        for study in STUDIES:
            settings = resolve_settings(scale)
            training, validation, holdout = split_real_set(settings, study, 5)
            real = (settings.brains if study == "ventricles" else settings.tumours).all_subjects()
            assert training + validation == real and not set(holdout) & set(real)
    calls: list = []
    study_fakes.install(monkeypatch, tmp_path, calls)
    import shared.workflow.demo_recipes as recipes

    monkeypatch.setattr(recipes, "write_parts", lambda *a: pytest.fail("the learning curve drew a hold-out"))
    report = learning_curve("ventricles", tmp_path / "curve", scale="study", iterations=(25, 50))
    rows = read_csv(tmp_path / "curve" / "learning_curve.csv")
    assert [int(r["iterations"]) for r in rows] == [25, 50] and report.is_file()
    provenance = read_csv(next((tmp_path / "curve" / "nnunet" / "nnUNet_raw").glob("Dataset901_*")) / "provenance.csv")
    split = {side: {r["subject"] for r in provenance if r["split"] == side} for side in ("train", "test")}
    settings = resolve_settings("study")
    assert split["test"] == {f"demo-brain-s0-{i:03d}" for i in range(15, 20)}
    assert split["train"] | split["test"] == set(settings.brains.all_subjects())
    assert not (split["train"] | split["test"]) & set(parts_subjects(settings.ventricle_holdout))
    assert [c[3] for c in calls if c[0] == "train_nnunet"] == [3e-3, 3e-3]


@pytest.mark.parametrize("scale", list(SCALES))
def test_every_training_set_trains_with_the_same_batch_size(scale, tmp_path, monkeypatch):
    """Equal compute per variant: the scale fixes nnU-Net's batch, and every model's command carries it."""
    from shared.workflow import stages

    settings = resolve_settings(scale)
    assert {settings.schedule(study).batch_size for study in STUDIES} == {2}
    commands: list = []
    monkeypatch.setattr(stages, "run_command", lambda command, *a, **k: commands.append(command))
    stages.train_nnunet(501, tmp_path, settings.schedule("tumours"), 0.25, "cpu", 0, tmp_path / "results")
    assert commands[0][commands[0].index("--batch_size") + 1] == "2"
    planned = replace(settings.schedule("tumours"), batch_size=None)
    stages.train_nnunet(501, tmp_path, planned, 0.25, "cpu", 0, tmp_path / "results")
    assert "--batch_size" not in commands[1]  # None: nnU-Net's planner chooses


@pytest.mark.slow
def test_the_3d_ldm_baseline_learns_from_the_slice_ldms_starter_data_drawn_again(tmp_path, monkeypatch):
    """Pool protocol: the slice LDM is its starter; the 3D-LDM trains in the run on the starter's cases and split."""
    calls = _tumour_study(tmp_path, monkeypatch, "pool")
    trained = [c for c in calls if c[0] == "run_bundle" and "pairs" not in c[2]]
    assert [c[2] for c in trained] == ["3D-LDM autoencoder", "3D-LDM diffusion", "3D-LDM diffusion (continuation 1)"]
    data = read_json(tmp_path / "data" / "pool_tumours" / "part_0" / "datalist.json")
    assert trained[0][3]["datalist"] == str(tmp_path / "data" / "pool_tumours" / "part_0" / "datalist.json")
    starter = read_ledger(tmp_path / "models" / "slice_based_ldm_brats" / "ledger_autoencoder.json")
    baseline = read_ledger(tmp_path / "models" / "3d_ldm" / "ledger_autoencoder.json")
    assert set(baseline.training) == set(starter.training) and len(data["training"]) == 114
    assert set(baseline.validation) == set(starter.validation)
    assert trained[0][3]["autoencoder_epochs"] == 10  # half the starter's 20
    summary = read_csv(tmp_path / "evaluation" / "tumours" / "summary.csv")
    assert {"synthetic_3d_ldm", "augmented_3d_ldm"} <= {row["model"] for row in summary}
    table1 = read_json(tmp_path / "evaluation" / "tumours" / "table1.json")
    assert table1["reference"] == str(tmp_path / "data" / "pool_tumours" / "datalist.json")
    assert table1["rows"][0]["method"] == "SBLDM" and 1.0 < table1["rows"][0]["params_m"] < 3.0  # the starter's

"""A study file: the whole study on the user's own data, checked as a whole before anything is written.

The studies run with bundle runs and nnU-Net replaced (``study_fakes``); reading the layouts, the
working grid, ledgers, the design check, the pool, evaluation and the report are the project's own.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import study_fakes
import yaml

from shared.demo.dataset import write_brain_dataset, write_tumour_dataset
from shared.demo.layouts import (
    write_brats_layout,
    write_example_study_data,
    write_freesurfer_layout,
    write_synthseg_layout,
)
from shared.io import InputError, read_csv, read_json
from shared.workflow.design import plan_study
from shared.workflow.ledger import read_ledger
from shared.workflow.pipeline import run_demo_pipeline, run_study_file
from shared.workflow.settings import SCALES, STUDIES, resolve_settings
from shared.workflow.stages import pool_set_datalist
from shared.workflow.study_file import SHIPPED_STUDIES, load_study, scale_study_file, write_resolved

#: Small settings for every study here (a few cases, 2 seeds, quick fidelity).
SMALL_SETTINGS = {"n_generated": 4, "nnunet_seeds": 2, "fidelity": {"feature_iterations": 20, "resamples": 20}}
BRAIN_GRID = {"shape": [32, 32, 32], "spacing": [6, 6, 6]}
TUMOUR_GRID = {"shape": [64, 64, 32], "spacing": [3.75, 3.75, 5.0]}


def split_folder(folder, holdout, names):
    """Move the entries ``names`` of ``folder`` into ``holdout`` (other subjects of the same layout)."""
    holdout.mkdir()
    for name in names:
        shutil.move(str(folder / name), str(holdout / name))
    return holdout


@pytest.fixture(scope="module")
def user_data(tmp_path_factory):
    """FreeSurfer subjects, SynthSeg pairs, a datalist and BraTS 2021 cases made from demo data."""
    root = tmp_path_factory.mktemp("user_data")
    brains = write_brain_dataset(root / "demo_brains", n_cases=10, shape=(32, 32, 32), validation_fraction=0.0)
    freesurfer = write_freesurfer_layout(brains, root / "freesurfer")
    synthseg = write_synthseg_layout(brains, root / "synthseg")
    tumours = write_tumour_dataset(root / "demo_tumours", n_cases=12, shape=(64, 64, 64), validation_fraction=0.0)
    brats = write_brats_layout(tumours, root / "brats")
    items = read_json(brains)["training"]
    for item in items:
        for key in ("image", "label"):
            item[key] = str((brains.parent / item[key]).resolve())
    datalist = root / "datalist_real.json"
    datalist.write_text(json.dumps({"training": items[:6]}))
    # the demo brains of seed 0 are the starter generators' data: a hold-out of other subjects (seed 2000)
    other = write_brain_dataset(root / "demo_holdout", n_cases=4, shape=(32, 32, 32), seed=2000, validation_fraction=0)
    (root / "datalist_starters_saw.json").write_text(json.dumps({"training": items[6:]}))
    held = [f"sub-{i:03d}" for i in range(6, 10)]
    return {
        "root": root,
        "freesurfer": (freesurfer, split_folder(freesurfer, root / "freesurfer_holdout", held)),
        "synthseg": (synthseg, split_folder(synthseg, root / "synthseg_holdout",
                                            [f"{s}{e}" for s in held for e in (".nii.gz", "_synthseg.nii.gz")])),
        "datalist": (datalist, other),
        "brats": (brats, split_folder(brats, root / "brats_holdout", [f"BraTS2021_{i:05d}" for i in range(8, 12)])),
    }  # fmt: skip


def write_study(folder, content, name="study.yaml"):
    path = folder / name
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def ventricle_study(real, holdout, **extra):
    return {
        "defaults": "study",
        "studies": ["ventricles"],
        "settings": {"generators_from": "pool", "ventricle_variants": ["real", "pool", "augmented"], **SMALL_SETTINGS},
        "data": {"ventricles": {"real": str(real), "holdout": str(holdout), "grid": BRAIN_GRID, **extra}},
    }


@pytest.mark.slow
def test_a_ventricle_study_on_freesurfer_synthseg_and_datalist_sets_runs_end_to_end(user_data, tmp_path, monkeypatch):
    """Real set: FreeSurfer subjects; hold-out: a datalist; the generators' pool: SynthSeg pairs."""
    real, _ = user_data["freesurfer"]
    _, holdout = user_data["datalist"]
    pool, _ = user_data["synthseg"]
    content = ventricle_study(real, holdout, pool=str(pool))
    content["generators"] = {"spade_mri_ldm": {"preset": "paper", "overrides": {"diffusion_epochs": 2}}}
    path = write_study(tmp_path, content)
    calls: list = []
    out = tmp_path / "run"
    study_fakes.install(monkeypatch, out, calls)
    report = run_study_file(path, out)
    text = report.read_text()
    assert "## Answer" in text and "nnU-Net pool" in text and "the study file's data, on 32 x 32 x 32" in text
    resolved = yaml.safe_load((out / "study.yaml").read_text())
    assert resolved["data"]["ventricles"]["real"] == str(real.resolve())
    assert resolved["settings"]["nnunet_seeds"] == 2 and "n_brains" not in resolved["settings"]
    assert load_study(out / "study.yaml").settings == load_study(path).settings  # the resolved file reruns it
    raw = out / "nnunet" / "nnUNet_raw"
    real_ledger = read_ledger(next(raw.glob("Dataset501_*")) / "ledger.json")
    held = set(plan_study(load_study(path).settings, "ventricles").holdout)
    assert real_ledger.training == tuple(f"sub-{i:03d}" for i in range(6)) and not held & set(real_ledger.seen())
    trained = [c[3]["datalist"] for c in calls if c[0] == "run_bundle"]
    assert len(trained) == 4 and set(trained) == {str(pool_set_datalist(out, "ventricles"))}
    ledger = read_ledger(out / "models" / "ventricle_mask_ldm" / "ledger_diffusion.json")
    assert set(ledger.seen()) == {f"sub-{i:03d}" for i in range(6)}  # the SynthSeg pool's subjects
    pool_ledger = read_ledger(next(raw.glob("Dataset507_*")) / "ledger.json")
    assert set(pool_ledger.training) == set(ledger.training)
    assert len([c for c in calls if c[0] == "train_nnunet"]) == 3 * 2
    # the SPADE LDM trains and samples at the study file's preset (paper: its own configs), the mask LDM its starter's
    spade = [c for c in calls if c[0] == "run_bundle" and c[1] == "spade_mri_ldm"]
    assert spade and all(not any("presets" in f for f in c[4]) and c[3]["diffusion_epochs"] == 2 for c in spade)
    mask = [c for c in calls if c[0] == "run_bundle" and c[1] == "ventricle_mask_ldm"]
    assert mask and all(c[4][-1] == "configs/presets/science.yaml" for c in mask)
    assert {c[4]["spade_preset"] for c in calls if c[0] == "generate_pairs"} == {"paper"}
    assert resolved["generators"] == {"spade_mri_ldm": {"preset": "paper", "overrides": {"diffusion_epochs": 2}}}
    assert "| SPADE LDM (`spade_mri_ldm`) | `paper` preset, trained in this run | 32 x 32 x 32 | 6 x 6 x 6 |" in text
    assert "| nnU-Net `pool` | `3d_fullres`" not in text  # nnU-Net is faked here: no plans, no row


@pytest.mark.slow
def test_a_tumour_study_on_brats_cases_trains_its_generator_on_the_study_files_pool(user_data, tmp_path, monkeypatch):
    brats, holdout = user_data["brats"]
    pool = split_folder(brats, tmp_path / "pool", [f"BraTS2021_{i:05d}" for i in range(4, 8)])
    content = {
        "defaults": "study",
        "studies": "tumours",
        "settings": {"tumour_variants": ["real", "pool", "augmented"], **SMALL_SETTINGS},
        "data": {"tumours": {"real": str(brats), "holdout": str(holdout), "pool": str(pool), "grid": TUMOUR_GRID,
                             "layout": "brats", "tumour_ids": [1, 2, 4]}},
    }  # fmt: skip
    calls: list = []
    out = tmp_path / "run"
    study_fakes.install(monkeypatch, out, calls)
    run_study_file(write_study(tmp_path, content), out)
    trained = [c for c in calls if c[0] == "run_bundle" and "pairs" not in c[2]]
    assert trained and all(c[3]["datalist"] == str(pool_set_datalist(out, "tumours")) for c in trained)
    ledger = read_ledger(out / "models" / "slice_based_ldm_brats" / "ledger_diffusion.json")
    assert set(ledger.seen()) == {f"BraTS2021_{i:05d}" for i in range(4, 8)}
    assert "trained in this run on the study's pool set" in ledger.source
    assert "the study file's data, on 64 x 64 x 32" in (out / "report.md").read_text()


def test_a_hold_out_subject_the_starter_generators_learnt_from_is_refused_before_anything_is_written(
    user_data, tmp_path
):
    real, _ = user_data["datalist"]
    seen = user_data["root"] / "datalist_starters_saw.json"  # demo brains 006-009 of seed 0: the starters' data
    with pytest.raises(InputError, match=r"data.ventricles.holdout: subject demo-brain-s0-00\d was seen by mask LDM"):
        run_demo_pipeline(study=str(write_study(tmp_path, ventricle_study(real, seen))), output_dir=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_a_tumour_hold_out_case_too_large_for_the_grid_stops_the_run_before_the_ventricle_study_trains(
    user_data, tmp_path, monkeypatch
):
    """Every set is read onto the working grid first: a bad tumour hold-out case costs seconds, not a study."""
    import nibabel as nib

    brains, brain_holdout = user_data["freesurfer"]
    brats, tumour_holdout = user_data["brats"]
    holdout = tmp_path / "tumour_holdout"
    shutil.copytree(tumour_holdout, holdout)
    case = sorted(holdout.iterdir())[-1]
    for path in case.glob("*.nii.gz"):  # the same voxels at twice the voxel size: a head twice as large
        volume = nib.load(str(path))
        nib.save(nib.Nifti1Image(np.asanyarray(volume.dataobj), volume.affine @ np.diag([2, 2, 2, 1])), str(path))
    content = ventricle_study(brains, brain_holdout)
    content["studies"] = ["ventricles", "tumours"]
    content["data"]["tumours"] = {"real": str(brats), "holdout": str(holdout), "grid": TUMOUR_GRID, "layout": "brats",
                                  "tumour_ids": [1, 2, 4]}  # fmt: skip
    calls: list = []
    out = tmp_path / "run"
    study_fakes.install(monkeypatch, out, calls)
    with pytest.raises(InputError, match=rf"{case.name}_flair.nii.gz: head larger than the working field of view"):
        run_study_file(write_study(tmp_path, content), out)
    assert calls == []  # no generator trained, no nnU-Net
    assert {marker.stem for marker in (out / ".stages").glob("*.json")} == {"demo_brains", "demo_tumours",
                                                                            "holdout_brains"}  # fmt: skip


BAD_FILES = [
    ("unknown top key", lambda d: {**d, "dataset": 1}, "unknown key 'dataset'"),
    ("unknown setting", lambda d: {**d, "settings": {"nnunet_rate": 1}}, "settings: unknown key 'nnunet_rate'"),
    ("bad setting value", lambda d: {**d, "settings": {"nnunet_seeds": 0}}, "settings"),
    ("unknown study", lambda d: {**d, "studies": ["lesions"]}, "studies: expected some of"),
    ("unknown scale", lambda d: {**d, "defaults": "huge"}, "defaults: 'huge' is not a scale"),
    (
        "missing folder",
        lambda d: _data(d, real="no_such_folder"),
        r"data.ventricles.real: .*no_such_folder does not exist",
    ),
    ("missing hold-out", lambda d: _data(d, holdout=None), "data.ventricles.holdout: missing"),
    ("unknown data key", lambda d: _data(d, labels=[4]), "data.ventricles: unknown key 'labels'"),
    (
        "setting the data fixes",
        lambda d: {**d, "settings": {"n_brains": 3}},
        "settings.n_brains: set by data.ventricles",
    ),
    ("grid without spacing", lambda d: _data(d, grid={"shape": [32, 32, 32]}), "give both shape and spacing"),
    (
        "weights and the real protocol",
        lambda d: {
            **d,
            "settings": {"generators_from": "real"},
            "generators": {"ventricle_mask_ldm": {"weights": "."}},
        },
        "generators.ventricle_mask_ldm: named weights, but generators_from real",
    ),
    (
        "weights folder without manifest",
        lambda d: {**d, "generators": {"spade_mri_ldm": {"weights": "."}}},
        "holds no manifest.json",
    ),
    (
        "preset a bundle lacks",
        lambda d: {**d, "generators": {"spade_mri_ldm": {"preset": "huge"}}},
        "generators.spade_mri_ldm.preset: 'huge' is not a preset of spade_mri_ldm, expected one of paper, demo",
    ),
    (
        "weights and a preset",
        lambda d: {**d, "generators": {"spade_mri_ldm": {"weights": ".", "preset": "paper"}}},
        "generators.spade_mri_ldm: weights carry their own recipe",
    ),
    (
        "a recipe value no config has",
        lambda d: {**d, "generators": {"spade_mri_ldm": {"preset": "paper", "overrides": {"epochz": 3}}}},
        "generators.spade_mri_ldm.overrides: unknown key 'epochz'",
    ),
    (
        "a preset for starter weights",
        lambda d: {**d, "generators": {"ventricle_mask_ldm": {"preset": "paper"}}},
        "generators.ventricle_mask_ldm.preset: ventricle_mask_ldm is not trained in this run",
    ),
    (
        "weights of another study",
        lambda d: {**d, "generators": {"slice_based_ldm_brats": {"weights": "."}}},
        "generators: unknown key 'slice_based_ldm_brats'",
    ),
]


def _data(content, **entries):
    data = {**content["data"]["ventricles"], **entries}
    return {**content, "data": {"ventricles": {k: v for k, v in data.items() if v is not None}}}


@pytest.mark.parametrize("case", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_a_bad_study_file_is_refused_in_one_line_before_anything_is_written(case, user_data, tmp_path):
    _, change, message = case
    real, holdout = user_data["datalist"]
    path = write_study(tmp_path, change(ventricle_study(real, holdout)))
    out = tmp_path / "run"
    with pytest.raises(InputError, match=message) as error:
        run_demo_pipeline(study=str(path), output_dir=str(out))
    assert "\n" not in str(error.value)
    assert not out.exists()


def test_overlapping_subjects_empty_sets_absent_ids_and_mixed_grids_are_refused(user_data, tmp_path):
    real, holdout = user_data["freesurfer"]
    overlapping = tmp_path / "holdout_with_a_real_subject"
    shutil.copytree(holdout, overlapping)
    shutil.copytree(real / "sub-000", overlapping / "sub-000")
    with pytest.raises(InputError, match=r"real and holdout sets share 1 subject\(s\), e.g. 'sub-000'"):
        load_study(write_study(tmp_path, ventricle_study(real, overlapping), "overlap.yaml"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="data.ventricles.holdout: .*empty"):
        load_study(write_study(tmp_path, ventricle_study(real, tmp_path / "empty"), "empty.yaml"))
    brats, brats_holdout = user_data["brats"]
    content = {"studies": ["tumours"], "data": {"tumours": {"real": str(brats), "holdout": str(brats_holdout),
                                                            "grid": TUMOUR_GRID, "tumour_ids": [5, 6]}}}  # fmt: skip
    with pytest.raises(InputError, match=r"data.tumours.real.tumour_ids: none of \[5, 6\] is in any label map"):
        load_study(write_study(tmp_path, content, "ids.yaml"))
    content["data"]["tumours"].update(tumour_ids=[1, 2, 4], grid={"shape": [64, 64, 64], "spacing": [3, 3, 3]})
    with pytest.raises(InputError, match="data.tumours.grid.shape: .*tumour_working_shape"):
        load_study(write_study(tmp_path, content, "tumour_grid.yaml"))
    mixed = tmp_path / "mixed.json"
    items = read_json(user_data["datalist"][0])["training"]
    small = write_brain_dataset(tmp_path / "small", n_cases=1, shape=(24, 24, 24), validation_fraction=0.0)
    other = read_json(small)["training"][0]
    other.update(
        image=str(small.parent / other["image"]), label=str(small.parent / other["label"]), subject="x", case="x"
    )
    mixed.write_text(json.dumps({"training": [*items, other]}))
    no_grid = ventricle_study(mixed, user_data["datalist"][1])
    del no_grid["data"]["ventricles"]["grid"]
    with pytest.raises(InputError, match=r"data.ventricles: images on several grids .* give grid:"):
        load_study(write_study(tmp_path, no_grid, "mixed.yaml"))
    tumour_maps = ventricle_study(brats, brats_holdout)
    with pytest.raises(InputError, match=r"data.ventricles.real: no ventricle id pair \[4, 43\]"):
        load_study(write_study(tmp_path, tumour_maps, "no_ventricles.yaml"))


def test_with_a_study_file_no_other_setting_is_taken_beside_it(user_data, tmp_path):
    real, holdout = user_data["datalist"]
    path = write_study(tmp_path, ventricle_study(real, holdout))
    with pytest.raises(InputError, match="--nnunet_lr: with --study, set it in the study file"):
        run_demo_pipeline(study=str(path), nnunet_lr=0.01, output_dir=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_each_scale_is_a_shipped_study_file_and_its_resolved_copy_reruns_it(tmp_path):
    for scale in SCALES:
        study = load_study(scale_study_file(scale))
        assert study.settings == resolve_settings(scale) and study.studies == STUDIES
    # the main command's flags are values over the file; --branches none: the data only
    flagged = load_study(scale_study_file("demo"), {"n_brains": 4, "shape": [40, 40, 40]}, [])
    assert flagged.settings == resolve_settings("demo", n_brains=4, shape=(40, 40, 40)) and flagged.studies == ()
    target = write_resolved(flagged, tmp_path)
    again = load_study(target)
    assert again.settings == flagged.settings and again.studies == ()
    with pytest.raises(InputError, match="--scale 'huge': expected one of demo, study"):
        scale_study_file("huge")


#: A tiny study with every real component: the starter generators at the demo's sampling steps (at 2 steps
#: QC rejects every ventricle pair and the augmented variant is not trained), 2 pairs, one nnU-Net model of
#: 2 iterations per variant, a short fidelity network.
TINY_REAL_SETTINGS = {
    "n_generated": 2, "qc_rounds": 2, "nnunet_seeds": 1, "nnunet_epochs": 1, "nnunet_iterations": 2,
    "ventricle_variants": ["real", "augmented"], "tumour_variants": ["real", "augmented"],
    "fidelity": {"feature_iterations": 5, "resamples": 10},
}  # fmt: skip


@pytest.mark.slow
def test_every_layout_goes_end_to_end_through_the_real_generators_and_nnunet(user_data, tmp_path):
    """No fakes: FreeSurfer real brains, a SynthSeg hold-out; BraTS real cases, a datalist hold-out."""
    from shared.demo.dataset import write_brain_dataset, write_tumour_dataset

    freesurfer, _ = user_data["freesurfer"]
    # other subjects than the starter generators' (demo seed 0) for the hold-outs
    other_brains = write_brain_dataset(tmp_path / "b", n_cases=4, shape=(32, 32, 32), seed=3000, validation_fraction=0)
    synthseg_holdout = write_synthseg_layout(other_brains, tmp_path / "synthseg_holdout")
    for path in synthseg_holdout.iterdir():  # the layout names subjects sub-000...: other names, other subjects
        path.rename(path.with_name(path.name.replace("sub-", "ext-")))
    _, brats = user_data["brats"]  # BraTS2021_00008-00011, kept whole by every test
    # a head within the working grid's 160 mm along z (the demo's 192 mm field of view is refused)
    other_tumours = write_tumour_dataset(
        tmp_path / "t", n_cases=3, shape=(64, 64, 48), spacing=3.0, seed=3000, validation_fraction=0
    )
    content = {
        "defaults": "demo",
        "settings": TINY_REAL_SETTINGS,
        "data": {
            "ventricles": {"real": str(freesurfer), "holdout": str(synthseg_holdout), "grid": BRAIN_GRID},
            "tumours": {"real": str(brats), "holdout": str(other_tumours), "grid": TUMOUR_GRID,
                        "tumour_ids": [1, 2, 4]},
        },
    }  # fmt: skip
    out = tmp_path / "run"
    report = run_study_file(write_study(tmp_path, content), out).read_text()
    for section in ("## Answer", "## Ventricle segmentation", "## Tumour segmentation", "## Stage times"):
        assert section in report, section
    assert "| nnU-Net `real` | `3d_fullres`" in report
    assert "| slice LDM (`slice_based_ldm_brats`) | `demo` preset, starter weights" in report
    for study, n_holdout in (("ventricles", 4), ("tumours", 3)):
        rows = read_csv(out / "evaluation" / study / "per_case.csv")
        assert len(rows) == 2 * n_holdout and {r["model"] for r in rows} == {"real", "augmented"}
        assert all(0 <= float(r["dice"]) <= 1 for r in rows)
    pairs = read_csv(out / "generated" / "tumours" / "manifest.csv")
    assert pairs and all(r["qc_status"] for r in pairs)


@pytest.mark.slow
def test_the_shipped_example_study_files_load_on_the_example_data(tmp_path):
    write_example_study_data(tmp_path / "outputs" / "example_data", n_train=3, n_test=2)
    studies = tmp_path / "scripts" / "studies"
    studies.mkdir(parents=True)
    for name, study in (("freesurfer_ventricles", "ventricles"), ("brats_tumours", "tumours")):
        shutil.copy(SHIPPED_STUDIES / f"{name}.yaml", studies)
        loaded = load_study(studies / f"{name}.yaml")
        assert loaded.studies == (study,)
        sets = {role: loaded.resolved["data"][study][role] for role in ("real", "holdout")}
        assert sets == {role: str(tmp_path / "outputs" / "example_data" / sets[role].split("/")[-2] / folder)
                        for role, folder in (("real", "train"), ("holdout", "test"))}  # fmt: skip
        plan = plan_study(loaded.settings, study)
        assert len(plan.holdout) == 2

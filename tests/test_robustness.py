"""Bad inputs and faults of every command line: one line, the right exit code, nothing half-written.

Every case here is a row of ``docs/robustness.md`` (checked by
:func:`test_every_row_of_the_robustness_table_is_a_test`). Command lines run in this process
(``runpy``), so a case costs its own work, not an interpreter start.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import ROOT, save_nifti
from shared.demo.dataset import write_brain_dataset, write_tumour_dataset
from shared.io import InputError, read_json, write_json

SCRIPTS = ROOT / "scripts"
DOC = ROOT / "docs" / "robustness.md"


def run_in_process(script: str, args: list[str], capsys) -> tuple[int, str, str]:
    """``python scripts/<script> *args`` in this process: ``(exit code, stdout, stderr)``."""
    saved = sys.argv
    sys.argv = [str(SCRIPTS / script), *args]
    code = 0
    try:
        runpy.run_path(str(SCRIPTS / script), run_name="__main__")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = saved
    out, err = capsys.readouterr()
    return code, out, err


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Tiny demo brains (4 at 16^3) and tumours (4 at 16^3), written once for the module."""
    root = tmp_path_factory.mktemp("robustness")
    brains = write_brain_dataset(root / "brains", n_cases=4, shape=(16, 16, 16), validation_fraction=0.25)
    tumours = write_tumour_dataset(root / "tumours", n_cases=4, shape=(16, 16, 16), validation_fraction=0.25)
    return {"brains": brains, "brain_labels": root / "brains" / "labels", "tumours": tumours}


@dataclass
class Case:
    """A command line that must fail: ``{tmp}``, ``{brains}``, ``{labels}``, ``{tumours}`` are filled in."""

    id: str
    script: str
    args: list[str]
    message: str
    code: int = 2
    absent: list[str] = field(default_factory=list)
    setup: Callable[[Path], None] | None = None


def _write(relative: str, content: bytes | str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        path = tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return setup


def _mkdir(relative: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / relative).mkdir(parents=True)


CASES = [
    # ------------------------------------------------------------------ strict command lines
    Case("misspelt-flag-does-no-work", "compute_conditions.py",
         ["ventricles", "{labels}", "--output", "{tmp}/x.csv", "--normalizer", "n.json"],
         "error: --normalizer: unknown flag; did you mean --normaliser?", absent=["x.csv", "x_normaliser.json"]),
    Case("misspelt-command", "compute_conditions.py", ["ventricle", "{labels}", "--output", "{tmp}/x.csv"],
         "error: ventricle: unknown command; did you mean ventricles?", absent=["x.csv"]),
    Case("misspelt-pipeline-flag", "run_pipeline.py", ["--output_dir", "{tmp}/p", "--nnunet_epoch", "100"],
         "error: --nnunet_epoch: unknown flag; did you mean --nnunet_epochs?", absent=["p"]),
    Case("flag-given-twice", "make_demo_data.py", ["brains", "{tmp}/d", "--seed", "1", "--seed", "2"],
         "error: --seed: given twice", absent=["d"]),
    Case("required-argument-missing", "compute_conditions.py", ["ventricles", "{labels}"],
         "error: --output: required, not given (see --help)"),
    Case("extra-positional-argument", "export_segmenter.py", ["a", "b.zip", "all", "c.pth", "surplus"],
         "error: 'surplus': unexpected extra argument"),
    Case("flag-without-value", "make_demo_data.py", ["brains", "{tmp}/d", "--seed"],
         "error: --seed: needs a value", absent=["d"]),
    Case("float-dataset-id", "assemble_nnunet_dataset.py",
         ["dataset", "real", "1.5", "X", "--real", "{brains}", "--nnunet_raw", "{tmp}/raw"],
         "error: --dataset_id: '1.5' is not a whole number", absent=["raw"]),
    Case("non-numeric-dataset-id", "train_segmentation.py", ["abc", "--nnunet_root", "{tmp}/nn"],
         "error: --dataset_id: 'abc' is not a whole number", absent=["nn"]),
    Case("dataset-id-out-of-range", "train_segmentation.py", ["1000", "--nnunet_root", "{tmp}/nn"],
         "error: --dataset_id: 1000 is out of range, expected in [1, 999]", absent=["nn"]),
    Case("negative-case-count", "make_demo_data.py", ["brains", "{tmp}/d", "--n_cases", "-1"],
         "error: --n_cases: -1 is out of range, expected >= 0", absent=["d"]),
    Case("fractional-case-count", "make_demo_data.py", ["brains", "{tmp}/d", "--n_cases", "2.5"],
         "error: --n_cases: '2.5' is not a whole number", absent=["d"]),
    Case("negative-synthetic-count", "assemble_nnunet_dataset.py",
         ["dataset", "synthetic", "5", "X", "--synthetic", "{brains}", "--n_synthetic", "-3", "--nnunet_raw",
          "{tmp}/raw"],
         "error: --n_synthetic: -3 is out of range, expected >= 0", absent=["raw"]),
    Case("negative-sample-count", "generate_pairs.py", ["{tmp}/g", "--num_samples", "-1"],
         "error: --num_samples: -1 is out of range, expected >= 0", absent=["g"]),
    Case("grid-too-large-for-memory", "make_demo_data.py", ["brains", "{tmp}/d", "--shape", "4000,4000,4000"],
         "error: grid shape 4000x4000x4000: needs about", absent=["d"]),
    Case("fraction-out-of-range", "make_demo_data.py", ["tumours", "{tmp}/d", "--validation_fraction", "1.5"],
         "error: --validation_fraction: 1.5 is out of range, expected in [0, 1]", absent=["d"]),
    Case("not-a-number", "evaluate_segmentation.py",
         ["{labels}", "{labels}", "{tmp}/e", "--volume_threshold_ml", "lots"],
         "error: --volume_threshold_ml: 'lots' is not a number", absent=["e"]),
    Case("not-a-boolean", "paper_size_check.py", ["ventricle_mask_ldm", "--forward", "maybe"],
         "error: --forward: 'maybe' is not True or False"),
    Case("wrong-number-of-values", "paper_size_check.py", ["ventricle_mask_ldm", "--shape", "96,112"],
         "error: --shape: '96,112' has 2 values, expected 3"),
    Case("unknown-device", "train_segmentation.py", ["1", "--device", "tpu", "--nnunet_root", "{tmp}/nn"],
         "error: --device: unknown device 'tpu', expected cpu, cuda, cuda:N or mps", absent=["nn"]),
    Case("dict-flag-given-a-number", "export_bundle.py",
         ["ventricle_mask_ldm", "{tmp}/m", "{tmp}/o.zip", "--overrides", "5"],
         "error: --overrides: '5' is not a dict", absent=["o.zip"]),
    Case("unknown-sampler", "generate_pairs.py", ["{tmp}/g", "--mask_sampler", "dpm"],
         "error: --mask_sampler: expected one of", absent=["g"]),
    Case("one-word-list-is-one-item", "benchmark.py",
         ["run", "--bundles", "ventricle", "--output_dir", "{tmp}/b"],
         "error: --bundles: unknown ventricle; expected some of", absent=["b"]),
    Case("unknown-threshold-name", "check_demo_report.py", ["{tmp}", "--warn_only", "nope"],
         "error: --warn_only: unknown threshold 'nope'"),
    Case("unknown-pair-kind", "check_pairs.py", ["volumes", "{tmp}"], "error: kind: unknown 'volumes'"),
    Case("zero-steps-in-a-list", "sampling_study.py", ["{tmp}/s", "{brains}", "{tumours}", "--steps", "5,0"],
         "error: --steps: 0 is out of range, expected >= 1", absent=["s"]),
    Case("unknown-starter-bundle", "make_starter_weights.py", ["nope", "{tmp}/m", "demo"],
         "error: bundle: unknown 'nope'", absent=["m"]),
    Case("missing-real-images", "image_fidelity.py", ["contrast", "{tmp}/none", "{labels}", "{tmp}/f"],
         "error: {tmp}/none", absent=["f"]),
    Case("unknown-bundle", "export_bundle.py", ["nope", "{tmp}/m", "{tmp}/o.zip"],
         "error: bundle: unknown 'nope'", absent=["o.zip"]),
    # ------------------------------------------------------------------ bad files
    Case("truncated-gzip-volume", "compute_conditions.py", ["ventricles", "{tmp}/maps", "--output", "{tmp}/x.csv"],
         "error: {tmp}/maps/broken.nii.gz: cannot read volume", absent=["x.csv"],
         setup=_write("maps/broken.nii.gz", b"\x1f\x8b garbage")),
    Case("datalist-entry-of-wrong-type", "compute_conditions.py",
         ["ventricles", "{tmp}/list.json", "--output", "{tmp}/x.csv"],
         "'label' must be a file path (a string), got int 5", absent=["x.csv"],
         setup=_write("list.json", '{"training": [{"label": 5}]}')),
    Case("datalist-not-an-object", "compute_conditions.py", ["tumours", "{tmp}/list.json", "--output", "{tmp}/x.csv"],
         "error: {tmp}/list.json: datalist must be a JSON object of lists", absent=["x.csv"],
         setup=_write("list.json", "[1, 2]")),
    Case("json-not-utf8", "compute_conditions.py", ["ventricles", "{tmp}/list.json", "--output", "{tmp}/x.csv"],
         "error: {tmp}/list.json: not valid JSON (not UTF-8 text)", absent=["x.csv"],
         setup=_write("list.json", b"\xff\xfe{\x00")),
    Case("csv-not-utf8", "check_pairs.py", ["ventricles", "{tmp}/gen"],
         "error: {tmp}/gen/manifest.csv: not a CSV of UTF-8 text",
         setup=_write("gen/manifest.csv", b"image,label\n\xe9t\xe9.nii.gz,x.nii.gz\n")),
    Case("output-is-a-folder", "compute_conditions.py", ["ventricles", "{labels}", "--output", "{tmp}/out"],
         "error: {tmp}/out: is a folder, expected a file to write", setup=_mkdir("out")),
    Case("output-folder-is-a-file", "compute_conditions.py",
         ["ventricles", "{labels}", "--output", "{tmp}/afile/x.csv"],
         "error: {tmp}/afile: is a file, expected a folder to write x.csv in", setup=_write("afile", "x")),
    Case("degenerate-normaliser", "compute_conditions.py",
         ["ventricles", "{labels}", "--output", "{tmp}/x.csv", "--normaliser", "{tmp}/n.json"],
         "must exceed min", absent=["x.csv"],
         setup=_write("n.json", '{"quantity": "ventricle_ratio", "minimum": 0.02, "maximum": 0.02}')),
    Case("missing-report", "check_demo_report.py", ["{tmp}/none"], "error: {tmp}/none/figures.json: no such file"),
    Case("not-a-model-folder", "export_segmenter.py", ["{tmp}/none", "{tmp}/o.zip"],
         "error: {tmp}/none", absent=["o.zip"]),
    Case("duplicate-case-names", "prepare_tumour_data.py", ["{tmp}/two.json", "{tmp}/prep", "--shape", "16,16,16"],
         "is also that of", absent=["prep", ".prep.partial"], setup=None),
    Case("labels-absent-from-evaluation", "evaluate_segmentation.py",
         ["{labels}", "{labels}", "{tmp}/e", "--labels", "77"],
         "error: --labels 77: in no truth and no prediction (every Dice would be 1.0)", absent=["e/summary.md"]),
    Case("labels-absent-from-assembly", "assemble_nnunet_dataset.py",
         ["dataset", "real", "7", "X", "--real", "{brains}", "--labels", "{'x': [99]}", "--nnunet_raw", "{tmp}/raw",
          "--num_workers", "1", "--noprogress"],
         "no voxel of any training label map has these labels",
         absent=["raw/Dataset007_X", "raw/.Dataset007_X.partial"]),
    Case("unknown-protocol", "run_pipeline.py", ["--output_dir", "{tmp}/p", "--generators_from", "both"],
         "error: --generators_from 'both': expected one of pool, real", absent=["p"]),
    Case("starter-grid-with-pool-generators", "run_pipeline.py", ["--output_dir", "{tmp}/p", "--shape", "40,40,40"],
         "starter weights work on 32,32,32; use that grid or --generators_from real", absent=["p"]),
    Case("unknown-learning-curve-study", "learning_curve.py", ["lungs", "--output_dir", "{tmp}/c"],
         "error: study: unknown 'lungs', expected one of ventricles, tumours", absent=["c"]),
    Case("learning-curve-validation-takes-every-subject", "learning_curve.py",
         ["ventricles", "--output_dir", "{tmp}/c", "--validation_subjects", "20"],
         "error: --validation_subjects 20: need at least 1 and fewer than the 20 real training subjects",
         absent=["c"]),
    Case("learning-curve-iterations-not-whole-epochs", "learning_curve.py",
         ["ventricles", "--output_dir", "{tmp}/c", "--iterations", "100,130"],
         "error: --iterations: multiples of 25 (iterations per epoch), got [130]", absent=["c"]),
    Case("starter-ledger-of-unknown-bundle", "record_starter_ledger.py", ["lung_ldm", "--stages", "{'a': {}}"],
         "error: bundle: unknown 'lung_ldm'"),
    Case("starter-ledger-recipe-of-unknown-kind", "record_starter_ledger.py",
         ["spade_mri_ldm", "--stages", "{'autoencoder': {'kind': 'lungs', 'n_cases': 2, 'shape': [16, 16, 16], "
          "'seed': 0}}", "--folder", "{tmp}/starter"],
         "error: demo recipe kind 'lungs': expected one of brains, tumours"),
    Case("empty-training-set", "assemble_nnunet_dataset.py",
         ["dataset", "synthetic", "8", "X", "--synthetic", "{brains}", "--n_synthetic", "0", "--nnunet_raw",
          "{tmp}/raw"],
         "error: variant 'synthetic': no training pairs selected", absent=["raw/Dataset008_X"]),
    # ------------------------------------------------------------------ your own data (prepare_dataset.py)
    Case("source-in-no-known-layout", "prepare_dataset.py", ["{tmp}/mine", "{tmp}/set", "brains", "32,32,32", "6,6,6"],
         "error: {tmp}/mine: no known layout (brats:", absent=["set"], setup=_write("mine/notes.txt", "x")),
    Case("unknown-layout-name", "prepare_dataset.py",
         ["{brains}", "{tmp}/set", "brains", "32,32,32", "6,6,6", "--layout", "nifti"],
         "error: --layout: 'nifti' is not one of", absent=["set"]),
    Case("working-grid-too-small", "prepare_dataset.py", ["{tumours}", "{tmp}/set", "tumours", "4,64,64", "3,3,3"],
         "error: working grid: shape must be three integers >= 8, got (4, 64, 64)", absent=["set"]),
    Case("case-folder-without-segmentation", "prepare_dataset.py",
         ["{tmp}/brats", "{tmp}/set", "tumours", "64,64,64", "3,3,3", "--layout", "brats"],
         "error: {tmp}/brats/BraTS2021_00001: no segmentation", absent=["set"],
         setup=_write("brats/BraTS2021_00001/BraTS2021_00001_flair.nii.gz", b"x")),
    Case("tumour-ids-not-in-the-segmentation", "prepare_dataset.py",
         ["{tumours}", "{tmp}/set", "tumours", "64,64,64", "3,3,3", "--tumour_ids", "2,4"],
         "label ids [1] are not tumour ids [2, 4] or background", absent=["set"]),
    Case("head-larger-than-the-working-grid", "prepare_dataset.py",
         ["{brains}", "{tmp}/set", "brains", "8,8,8", "6,6,6"],
         "head larger than the working field of view", absent=["set"]),
]  # fmt: skip


def _duplicate_names(tmp: Path, data: dict[str, Path]) -> None:
    """Two cases from different folders whose files are both called ``case.nii.gz``."""
    items = read_json(data["tumours"])
    first, second = items["training"][0], items["training"][1]
    root = data["tumours"].parent
    entries = []
    for index, item in enumerate((first, second)):
        folder = tmp / f"site{index}"
        folder.mkdir()
        shutil.copy(root / item["image"], folder / "flair.nii.gz")
        shutil.copy(root / item["label"], folder / "case.nii.gz")
        entries.append({"image": str(folder / "flair.nii.gz"), "label": str(folder / "case.nii.gz")})
    (tmp / "two.json").write_text(json.dumps({"training": entries}))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, data, tmp_path, capsys):
    if case.setup is not None:
        case.setup(tmp_path)
    if case.id == "duplicate-case-names":
        _duplicate_names(tmp_path, data)
    fill = {"tmp": str(tmp_path), "brains": str(data["brains"]), "labels": str(data["brain_labels"]),
            "tumours": str(data["tumours"])}  # fmt: skip
    args = [a.format(**fill) if "{" in a and "}" in a and not a.startswith("{'") else a for a in case.args]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, _, err = run_in_process(case.script, args, capsys)
    line = last_line(err)
    assert code == case.code, err[-2000:]
    assert case.message.format(**fill) in line, err[-2000:]
    assert line.startswith("error: ") and "Traceback" not in err, err[-2000:]
    for relative in case.absent:
        assert not (tmp_path / relative).exists(), relative
    assert not [p for p in tmp_path.rglob(".tmp-*")]
    if case.id.startswith(("misspelt", "flag-", "required", "extra")):  # refused before any work: nothing new
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# ---------------------------------------------------------------------- help


def _components() -> dict[str, object]:
    """``{script: component}`` of every command-line script (their ``run_cli`` argument)."""
    import shared.cli.runner as cli

    found: dict[str, object] = {}
    real = cli.run_cli
    for script in sorted(SCRIPTS.glob("*.py")):
        if "run_cli(" not in script.read_text():
            continue
        cli.run_cli = lambda component, name=None, argv=None, _s=script.name: found.__setitem__(_s, component)
        try:
            runpy.run_path(str(script), run_name="__main__")
        finally:
            cli.run_cli = real
    return found


def test_help_describes_every_flag_of_every_command_with_its_default(capsys):
    import inspect

    from shared.cli.command_help import parameter_descriptions

    components = _components()
    assert len(components) >= 15, sorted(components)
    for script, component in components.items():
        commands = component.items() if isinstance(component, dict) else [(None, component)]
        for command, function in commands:
            where = f"{script} {command or ''}".strip()
            words = parameter_descriptions(function)
            code, out, _ = run_in_process(script, [*([command] if command else []), "--help"], capsys)
            assert code == 0, where
            for parameter in inspect.signature(function).parameters.values():
                if parameter.kind is parameter.VAR_POSITIONAL:
                    continue
                assert words.get(parameter.name, "").strip(), f"{where}: --{parameter.name} has no description"
                if parameter.kind is not parameter.VAR_KEYWORD:
                    entry = re.search(rf"^  --{parameter.name}  \((.*)\)$", out, re.M)
                    assert entry, f"{where}: --{parameter.name} not in --help"
                    assert "default" in entry.group(1) or "required" in entry.group(1), where
                # the whole description is printed, however long
                assert " ".join(words[parameter.name].split())[-30:] in " ".join(out.split()), where


def test_every_numeric_flag_declares_its_bound_beside_it_and_help_shows_it(capsys):
    """No int or float flag of any command is unbounded: its ``Annotated`` range sits in its signature."""
    import inspect

    from shared.bounds import ranges_in
    from shared.cli.arguments import signature_hints, type_name

    unbounded, checked = [], 0
    for script, component in _components().items():
        commands = component.items() if isinstance(component, dict) else [(None, component)]
        for command, function in commands:
            _, hints = signature_hints(function)
            numeric = [
                p.name
                for p in inspect.signature(function).parameters.values()
                if p.name in hints and re.search(r"\b(int|float)\b", type_name(hints[p.name]))
            ]
            if not numeric:
                continue
            _, out, _ = run_in_process(script, [*([command] if command else []), "--help"], capsys)
            for name in numeric:
                limits = [limit.describe() for limit in ranges_in(hints[name])]
                checked += 1
                if not limits:
                    unbounded.append(f"{script} {command or ''} --{name}")
                    continue
                entry = re.search(rf"^  --{name}  \((.*)\)$", out, re.M)
                assert entry and limits[0] in entry.group(1), f"{script} --{name}: {limits[0]} not in --help"
    assert unbounded == [] and checked >= 70


def test_a_tool_of_several_commands_lists_them_and_exits_2_without_one(capsys):
    code, _, err = run_in_process("assemble_nnunet_dataset.py", [], capsys)
    assert code == 2 and "variants" in err and "dataset" in err


# ---------------------------------------------------------------------- one line, exit codes


def test_internal_error_is_one_line_with_exit_1_and_a_traceback_under_verbose(capsys):
    from shared.cli.runner import run_cli

    def broken(value: int = 1) -> None:
        """Fails.

        Args:
            value: a number.
        """
        raise ZeroDivisionError("division by zero in the model")

    with pytest.raises(SystemExit) as stop:
        run_cli(broken, argv=[])
    err = capsys.readouterr().err
    assert stop.value.code == 1 and "Traceback" not in err
    assert last_line(err) == (
        "error: internal: ZeroDivisionError: division by zero in the model (run again with --verbose for the traceback)"
    )
    with pytest.raises(SystemExit):
        run_cli(broken, argv=["--verbose"])
    assert "Traceback" in capsys.readouterr().err


def test_a_one_word_list_is_a_one_item_list_and_a_word_keeps_its_zeros():
    from shared.cli.arguments import bind_arguments

    def command(variants: Sequence[str] = ("a", "b"), labels: Sequence[int] = (1,), case: str = "x") -> None:
        """Nothing."""

    call = bind_arguments(command, ["--variants", "real", "--labels", "1,2", "--case", "007"])
    assert call.kwargs == {"variants": ["real"], "labels": [1, 2], "case": "007"}
    assert bind_arguments(command, ["--variants=real,synthetic"]).kwargs["variants"] == ["real", "synthetic"]


def test_permission_errors_are_one_line_for_a_user_who_is_not_root(data, capsys):
    """Runs the command with the effective user ``nobody`` (when the suite runs as root), so the
    permission error is real: root may write anywhere."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to the user nobody")
    folder = Path(tempfile.mkdtemp(prefix="robustness-nobody-"))
    try:
        folder.chmod(0o755)
        shutil.copytree(data["brain_labels"], folder / "maps")
        (folder / "locked").mkdir(mode=0o555)
        args = ["ventricles", str(folder / "maps"), "--output", str(folder / "locked" / "x.csv")]
        assert run_in_process("compute_conditions.py", args, capsys)[0] == 0  # as root: imports done, file written
        for written in (folder / "locked").iterdir():
            written.unlink()
        os.seteuid(65534)
        try:
            code, _, err = run_in_process("compute_conditions.py", args, capsys)
        finally:
            os.seteuid(0)
        assert code == 2, err[-2000:]
        line = last_line(err)
        assert line.startswith(f"error: {folder / 'locked'}/") and line.endswith(": permission denied"), err[-2000:]
        assert not list((folder / "locked").iterdir())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------- all-or-nothing outputs


def test_a_failed_multi_variant_assembly_leaves_no_variant_and_the_rerun_builds_all(data, tmp_path, capsys):
    synthetic = tmp_path / "syn"
    shutil.copytree(data["brains"].parent, synthetic)
    broken = synthetic / "labels" / sorted(os.listdir(synthetic / "labels"))[1]
    saved = broken.read_bytes()
    broken.write_bytes(b"\x1f\x8b broken")
    args = ["variants", "11", "Brains", str(data["brains"]), str(synthetic / "datalist.json"), "--variants",
            "real,synthetic", "--nnunet_raw", str(tmp_path / "raw"), "--num_workers", "1", "--noprogress"]  # fmt: skip
    code, _, err = run_in_process("assemble_nnunet_dataset.py", args, capsys)
    assert code == 2 and f"error: {broken}: cannot read volume" in last_line(err), err[-2000:]
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == []  # the real variant, built first, is gone too
    broken.write_bytes(saved)
    code, _, err = run_in_process("assemble_nnunet_dataset.py", args, capsys)
    assert code == 0, err[-2000:]
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [
        "Dataset011_BrainsReal",
        "Dataset012_BrainsSynthetic",
    ]


def test_variants_given_as_one_word_assemble_that_one_variant(data, tmp_path, capsys):
    args = ["variants", "21", "B", str(data["brains"]), str(data["brains"]), "--variants", "real", "--nnunet_raw",
            str(tmp_path / "raw"), "--num_workers", "1", "--noprogress"]  # fmt: skip
    code, _, err = run_in_process("assemble_nnunet_dataset.py", args, capsys)
    assert code == 0, err[-2000:]
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["Dataset021_BReal"]
    code, _, err = run_in_process("assemble_nnunet_dataset.py", args, capsys)
    assert code == 2 and "exists already; pass --overwrite to replace it" in last_line(err)


def test_preparation_keeps_the_earlier_result_when_a_case_is_bad_and_drops_stale_cases(data, tmp_path, capsys):
    prep = tmp_path / "prep"
    args = [str(data["tumours"]), str(prep), "--shape", "16,16,16"]
    assert run_in_process("prepare_tumour_data.py", args, capsys)[0] == 0
    first = (prep / "datalist.json").read_bytes()
    assert len(list((prep / "images").iterdir())) == 4

    items = read_json(data["tumours"])
    root = data["tumours"].parent
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b broken")
    three = [{"image": str(root / i["image"]), "label": str(root / i["label"])} for i in items["training"][:2]]
    write_json(tmp_path / "bad.json", {"training": [*three, {"image": str(bad), "label": str(bad)}]})
    code, _, err = run_in_process("prepare_tumour_data.py", [str(tmp_path / "bad.json"), *args[1:]], capsys)
    assert code == 2 and f"error: {bad}: cannot read volume" in last_line(err), err[-2000:]
    assert (prep / "datalist.json").read_bytes() == first and len(list((prep / "images").iterdir())) == 4
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

    write_json(tmp_path / "two.json", {"training": three})
    assert run_in_process("prepare_tumour_data.py", [str(tmp_path / "two.json"), *args[1:]], capsys)[0] == 0
    assert len(list((prep / "images").iterdir())) == 2  # no stale case of the larger first run


def test_leftover_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".tmp-{dead.pid}-0123abcd-x.json"
    live = tmp_path / f".tmp-{os.getppid()}-4567cdef-x.json"  # a writer that still runs keeps its file
    stale.write_text("{")
    live.write_text("{")
    write_json(tmp_path / "x.json", {"a": 1})
    assert not stale.exists() and live.exists() and read_json(tmp_path / "x.json") == {"a": 1}


def test_killing_the_assembly_leaves_no_worker_and_the_rerun_completes(tmp_path):
    datalist = write_brain_dataset(tmp_path / "data", n_cases=24, shape=(48, 48, 48), validation_fraction=0.0)
    command = [sys.executable, str(SCRIPTS / "assemble_nnunet_dataset.py"), "dataset", "real", "31", "K", "--real",
               str(datalist), "--nnunet_raw", str(tmp_path / "raw"), "--num_workers", "2", "--noprogress"]  # fmt: skip
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    partial = tmp_path / "raw" / ".Dataset031_K.partial" / "labelsTr"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (partial.is_dir() and len(list(partial.iterdir())) >= 2):
        time.sleep(0.05)
    assert partial.is_dir(), "the assembly never started writing"
    workers = [int(p) for p in Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()]
    assert workers, "no worker processes"
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in workers):
        time.sleep(0.1)
        for pid in workers:  # reap nothing: they are not our children; a zombie has status Z
            status = Path(f"/proc/{pid}/status")
            if status.exists() and "State:\tZ" in status.read_text():
                workers.remove(pid)
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers), "workers outlived their parent"
    assert not (tmp_path / "raw" / "Dataset031_K").exists()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list((tmp_path / "raw" / "Dataset031_K" / "labelsTr").iterdir())) == 24
    assert not (tmp_path / "raw" / ".Dataset031_K.partial").exists()


# ---------------------------------------------------------------------- results keyed by their parameters


def test_a_trained_fold_of_other_settings_is_trained_again_not_kept(tmp_path, monkeypatch):
    from shared.segmentation import nnunet_training as training

    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setattr(training, "dataset_name", lambda dataset_id: f"Dataset{dataset_id:03d}_X")

    class Stop(Exception):
        pass

    def no_trainer(*args, **kwargs):
        raise Stop

    import nnunetv2.run.run_training as run_training

    monkeypatch.setattr(run_training, "get_trainer_from_args", no_trainer)
    short = training.TrainingSchedule(epochs=1, iterations_per_epoch=1)
    fold = training.model_folder(5, "2d") / "fold_all"
    fold.mkdir(parents=True)
    (fold / "checkpoint_final.pth").write_bytes(b"weights of one epoch")
    write_json(fold / training.TRAINING_RECORD, training.training_settings(5, "2d", short))
    assert training.train(5, "2d", "all", short) == fold  # same settings: kept
    with pytest.raises(Stop):  # other settings: the old fold is removed and training starts
        training.train(5, "2d", "all", training.TrainingSchedule(epochs=2, iterations_per_epoch=1))
    assert not (fold / "checkpoint_final.pth").exists()
    assert read_json(fold / training.TRAINING_RECORD)["epochs"] == 2


def test_predictions_of_another_checkpoint_are_made_again_not_kept(tmp_path, monkeypatch):
    from shared.segmentation import nnunet_training as training

    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.setattr(training, "dataset_name", lambda dataset_id: f"Dataset{dataset_id:03d}_X")
    images = tmp_path / "images"
    save_nifti(images / "case_0000.nii.gz", np.zeros((4, 4, 4), np.float32))
    fold = training.model_folder(6, "2d") / "fold_all"
    fold.mkdir(parents=True)
    runs = []

    class FakePredictor:  # nnU-Net's predictor, writing one file per image
        def __init__(self, **kwargs):
            pass

        def initialize_from_trained_model_folder(self, *args, **kwargs):
            pass

        def predict_from_files(self, source, target, **kwargs):
            runs.append(target)
            save_nifti(Path(target) / "case.nii.gz", np.full((4, 4, 4), len(runs), np.uint8))

    import nnunetv2.inference.predict_from_raw_data as predict_module

    monkeypatch.setattr(predict_module, "nnUNetPredictor", FakePredictor)
    (fold / "checkpoint_final.pth").write_bytes(b"first weights")
    output = training.predict(6, images, tmp_path / "pred", "2d")
    assert training.predict(6, images, tmp_path / "pred", "2d") == output and len(runs) == 1  # same: kept
    (fold / "checkpoint_final.pth").write_bytes(b"retrained weights")
    training.predict(6, images, tmp_path / "pred", "2d")
    assert len(runs) == 2 and np.asarray(nib.load(output / "case.nii.gz").dataobj).max() == 2
    assert not (tmp_path / ".pred.partial").exists()


def test_resuming_from_a_checkpoint_of_another_architecture_is_refused_naming_it(tmp_path):
    import torch

    from shared.checkpoints import check_resumable

    path = tmp_path / "diffusion_checkpoint_epoch=3.pt"
    torch.save({"diffusion": torch.nn.Linear(2, 3).state_dict()}, path)
    check_resumable(path, {"diffusion": torch.nn.Linear(2, 3), "optimizer": object()})
    with pytest.raises(
        InputError, match=re.escape(f"{path}: 'diffusion' weight bias is (3,) there, (4,) in this config")
    ):
        check_resumable(path, {"diffusion": torch.nn.Linear(2, 4)})
    with pytest.raises(InputError, match="holds no 'autoencoder' network"):
        check_resumable(path, {"autoencoder": torch.nn.Linear(2, 3)})


def test_a_checkpoint_half_written_by_a_killed_run_is_removed_and_the_previous_one_resumed(tmp_path):
    import torch

    from shared.checkpoints import latest_whole_checkpoint

    torch.save({"diffusion": torch.nn.Linear(2, 3).state_dict()}, tmp_path / "diffusion_checkpoint_epoch=1.pt")
    whole = (tmp_path / "diffusion_checkpoint_epoch=1.pt").read_bytes()
    (tmp_path / "diffusion_checkpoint_epoch=2.pt").write_bytes(whole[: len(whole) // 2])  # killed mid-write
    path, saved = latest_whole_checkpoint(tmp_path, "diffusion")
    assert path == str(tmp_path / "diffusion_checkpoint_epoch=1.pt") and "diffusion" in saved
    assert not (tmp_path / "diffusion_checkpoint_epoch=2.pt").exists()
    (tmp_path / "diffusion_checkpoint_epoch=1.pt").write_bytes(whole[:100])
    assert latest_whole_checkpoint(tmp_path, "diffusion") == (None, None)  # nothing whole: a fresh start
    assert not list(tmp_path.iterdir())


def test_final_weights_are_not_written_from_an_interrupted_training(tmp_path):
    import torch
    from monai.engines import SupervisedTrainer

    from shared.checkpoints import final_weights_saver

    network = torch.nn.Linear(2, 1)
    data = [{"image": torch.ones(1, 2), "label": torch.ones(1, 1)}] * 3

    def trainer(fail: bool) -> SupervisedTrainer:
        def loss(prediction, target):
            if fail and engine.state.iteration == 2:
                raise KeyboardInterrupt
            return torch.nn.functional.mse_loss(prediction, target)

        engine = SupervisedTrainer(
            device=torch.device("cpu"), max_epochs=1, train_data_loader=data, network=network,
            optimizer=torch.optim.SGD(network.parameters(), 0.1), loss_function=loss,
        )  # fmt: skip
        final_weights_saver(save_dir=str(tmp_path), save_dict={"model": network}, save_final=True,
                            final_filename="model.pt").attach(engine)  # fmt: skip
        return engine

    with pytest.raises(KeyboardInterrupt):
        trainer(fail=True).run()
    assert not (tmp_path / "model.pt").exists()
    trainer(fail=False).run()
    assert (tmp_path / "model.pt").is_file()
    torch.load(tmp_path / "model.pt", weights_only=True)


def test_every_starter_checkpoint_loads_with_weights_only():
    import torch

    files = sorted(ROOT.glob("bundles/*/starter/*.pt"))
    assert len({f.parent.parent.name for f in files}) == 3, files
    for path in files:
        torch.load(path, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------- no silent nonsense


def test_a_ventricle_request_outside_the_physically_possible_is_refused():
    from shared.conditioning.features import MinMaxNormaliser
    from shared.conditioning.requests import resolve_conditions

    normaliser = MinMaxNormaliser(minimum=0.01, maximum=0.05)
    assert resolve_conditions([0.0, 1.0], 2, normaliser).tolist() == [0.0, 1.0]
    with pytest.raises(InputError, match=r"c=-0.5 maps to a ventricle_ratio of -0.01, outside \[0, 1\)"):
        resolve_conditions([0.5, -0.5], 2, normaliser)
    with pytest.raises(InputError, match="volumes_ml must be >= 0"):
        resolve_conditions({"volumes_ml": [-5.0], "icv_ml": 1400}, 1, normaliser)


# ---------------------------------------------------------------------- the table


def test_every_row_of_the_robustness_table_is_a_test():
    rows = re.findall(r"^\| `([\w:./-]+)` \|", DOC.read_text(), re.M)
    assert len(rows) == len(set(rows)), "a row is listed twice"
    here = {c.id for c in CASES} | {name[5:] for name in globals() if name.startswith("test_")}
    for row in rows:
        if "::" in row:
            module, function = row.split("::")
            assert f"def {function}(" in (ROOT / "tests" / module).read_text(), row
        else:
            assert row in here, f"{row}: in docs/robustness.md but not a test"
    assert {c.id for c in CASES} <= set(rows), sorted({c.id for c in CASES} - set(rows))
    assert len(rows) >= 40, len(rows)


@pytest.mark.slow
def test_a_socket_is_never_opened_by_inference(tmp_path):
    """Generation with the starter weights, with every socket refused: nothing reaches the network."""
    bundle = tmp_path / "bundle"
    shutil.copytree(ROOT / "bundles" / "ventricle_mask_ldm" / "configs", bundle / "configs")
    shutil.copytree(ROOT / "bundles" / "ventricle_mask_ldm" / "starter", bundle / "models")
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import socket\n"
        "def _refused(*args, **kwargs):\n"
        "    raise OSError('network access attempted')\n"
        "socket.socket.connect = _refused\n"
        "socket.socket.connect_ex = _refused\n"
        "socket.create_connection = _refused\n"
        "socket.getaddrinfo = _refused\n"
    )
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(ROOT)]), "HF_HUB_OFFLINE": "0"}
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
               "['configs/inference.yaml','configs/presets/science.yaml']", "--num_samples", "1",
               "--num_inference_steps", "2", "--ckpt_dir", "models", "--output_dir", str(tmp_path / "out")]  # fmt: skip
    probe = subprocess.run([sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 9))"],
                           capture_output=True, text=True, env=environment, timeout=60)  # fmt: skip
    assert "network access attempted" in probe.stderr, probe.stderr[-2000:]  # the blocker is in force
    done = subprocess.run(command, cwd=bundle, capture_output=True, text=True, timeout=600, env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "network access attempted" not in done.stderr
    assert len(list((tmp_path / "out").glob("*.nii.gz"))) == 1

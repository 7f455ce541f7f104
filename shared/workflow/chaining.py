"""Chaining the bundles: label maps with a requested ventricle size -> MR images -> labelled pairs.

Each bundle is run through its public interface, ``python -m monai.bundle run`` from its own
folder, exactly as a user would; this module only builds the two commands and checks them.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared.bounds import Count, NonNegative, Positive
from shared.io import InputError, read_csv
from shared.processes import die_with_parent

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]  # the checkout this package lives in
MASK_BUNDLE = ROOT / "bundles" / "ventricle_mask_ldm"
SPADE_BUNDLE = ROOT / "bundles" / "spade_mri_ldm"


def _override_args(overrides: Mapping[str, Any]) -> list[str]:
    """``{"num_samples": 4}`` -> ``["--num_samples", "4"]`` (lists and dicts in Python syntax, as MONAI parses them)."""
    args: list[str] = []
    for key, value in overrides.items():
        args += [f"--{key}", value if isinstance(value, str) else repr(value)]
    return args


def error_summary(stderr: str, returncode: int) -> str:
    """The cause of a failed bundle run in one line.

    MONAI re-raises a config error wrapped in ``RuntimeError: Failed to evaluate ...``, so the
    project's own ``InputError`` message is taken when present, else the last exception line.
    """
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    own = [line for line in lines if line.startswith("error: ")]  # the child's one-line failure
    if own:
        return own[-1].removeprefix("error: ").removesuffix(" (SHARED_VERBOSE=1 for the traceback)")
    causes = [line for line in lines if re.match(r"^[\w.]*InputError: ", line)]
    if not causes:
        causes = [line for line in lines if re.match(r"^[\w.]+(Error|Exception): ", line)]
    if causes:
        return causes[-1].split(": ", 1)[1]
    return lines[-1] if lines else f"exit code {returncode}"


def run_command(command: Sequence[str], cwd: Path, what: str, env: Mapping[str, str] | None = None) -> None:
    """Run a command whose output and progress bars go to this terminal; a failure raises its cause.

    ``env``: variables set for the command on top of this process's environment.

    Raises:
        InputError: ``<cwd>: <what> failed: <last error line of its error output>``.
    """
    logger.info("%s: %s (in %s)", what, " ".join(command[1:]), cwd)
    start = time.perf_counter()
    # stderr is teed: shown live (logs, progress bars) and kept for the one-line error
    environment = {**os.environ, **env} if env else None
    process = subprocess.Popen(
        list(command), cwd=cwd, stderr=subprocess.PIPE, text=True, errors="replace", env=environment,
        preexec_fn=die_with_parent,  # a killed parent leaves no bundle run behind
    )  # fmt: skip
    kept: list[str] = []
    assert process.stderr is not None
    try:
        for line in process.stderr:
            sys.stderr.write(line)
            kept.append(line)
            del kept[:-400]
    except KeyboardInterrupt:  # Ctrl-C reaches the child too: let it save its checkpoint and stop first
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        raise
    returncode = process.wait()
    if returncode != 0:
        cause = f"{cwd}: {what} failed: {error_summary(''.join(kept), returncode)}"
        raise InputError(cause) if returncode == 2 else RuntimeError(cause)
    logger.info("%s: done in %.1f s", what, time.perf_counter() - start)


def run_bundle(
    bundle: Path,
    configs: Sequence[str],
    overrides: Mapping[str, Any],
    what: str,
    env: Mapping[str, str] | None = None,
    nproc_per_node: int = 1,
) -> None:
    """Run ``python -m monai.bundle run`` in ``bundle``; a failure raises its last error line.

    ``env``: variables set for the run (the tracking parent run's id). ``nproc_per_node > 1``
    runs it under ``torchrun --standalone`` with the bundle's ``configs/multi_gpu_inference.yaml``.

    Raises:
        InputError: ``<bundle>: <what> failed: <last line of its error output>``.
    """
    configs = [*configs, "configs/multi_gpu_inference.yaml"] if nproc_per_node > 1 else list(configs)
    config_list = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}"]
    command = [sys.executable, *(launcher if nproc_per_node > 1 else []), "-m", "monai.bundle", "run",
               "--config_file", config_list, *_override_args(overrides)]  # fmt: skip
    run_command(command, bundle, what, env=env)


#: MLflow experiment of the bundles' runs (MONAI's ``--tracking mlflow`` default) and of the chain's parent run.
EXPERIMENT = "monai_experiment"


class ParentRun:
    """An MLflow run that the chained bundle runs nest under (``mlflow.parentRunId``).

    Used as a context manager: the run ends FINISHED, or FAILED when the chain raises.
    """

    def __init__(self, tracking_uri: str, params: Mapping[str, Any]) -> None:
        import mlflow

        from shared.tracking import run_name

        self.client = mlflow.MlflowClient(tracking_uri)
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(EXPERIMENT)
        run = self.client.create_run(
            experiment_id, run_name=run_name("generate_pairs"), tags={"stage": "generate_pairs"}
        )
        self.run_id = run.info.run_id
        for key, value in params.items():
            self.client.log_param(self.run_id, key, str(value)[:6000])

    def __enter__(self) -> ParentRun:
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        self.client.set_terminated(self.run_id, "FAILED" if kind is not None else "FINISHED")

    def log_artifacts(self, paths: Sequence[Path]) -> None:
        for path in paths:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))


#: A generator preset that is no overlay: the bundle's own configs, at the paper's sizes (a GPU's work).
PAPER_PRESET = "paper"


def preset_overlay(preset: str | None) -> list[str]:
    """The config file a preset adds over a bundle's own configs (none for ``None`` or :data:`PAPER_PRESET`)."""
    return [] if preset in (None, PAPER_PRESET) else [f"configs/presets/{preset}.yaml"]


def generate_pairs(
    output_dir: str | os.PathLike,
    num_samples: Count = 8,
    conditions: Any = None,
    guidance_scale: NonNegative | None = None,
    mask_sampler: str = "ddim",
    mask_steps: Positive = 25,
    image_sampler: str = "ddim",
    image_steps: Positive = 50,
    seed: Count = 0,
    preset: str | None = None,
    spade_preset: str | None = None,
    mask_bundle: str | os.PathLike = MASK_BUNDLE,
    spade_bundle: str | os.PathLike = SPADE_BUNDLE,
    mask_overrides: Mapping[str, Any] | None = None,
    spade_overrides: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    nproc_per_node: Positive = 1,
) -> Path:
    """N labelled pairs with a requested ventricle-size distribution, in one folder.

    Runs ``ventricle_mask_ldm`` inference (label maps for the requested ``c``, written to
    ``<output_dir>/label_maps``), then ``spade_mri_ldm`` inference on its output, which writes
    ``<output_dir>/images``, ``labels``, ``manifest.csv`` (with each map's requested ``c`` and
    achieved ventricle volume) and ``mosaic.png``.

    Args:
        output_dir: where the pairs go (absolute or relative to the current folder).
        num_samples: number of pairs.
        conditions: ``c`` requests in the mask bundle's syntax: a list, ``{"range": [lo, hi]}``,
            ``{"uniform": [lo, hi]}``, ``{"histogram": {...}}`` or ``{"volumes_ml": [...], "icv_ml": N}``;
            default: evenly spaced in [0, 1].
        guidance_scale: classifier-free guidance G of the mask model; default: its ``inference.yaml``'s
            (the paper's 4).
        mask_sampler: the mask model's solver: ``ddim`` (the paper), ``dpm_solver``, ``pndm`` or ``ddpm``
            (the README's "Fewer sampling steps" has the measured quality per step count; DPM-Solver++ 5
            holds the paper's quality).
        mask_steps: sampling steps of the mask model.
        image_sampler: the image model's solver, the same choices (DPM-Solver++ 15 holds the paper's quality).
        image_steps: sampling steps of the image model.
        seed: sample ``i`` uses seed ``seed + i`` in both models.
        preset: a preset name of both bundles (e.g. ``demo`` for ``configs/presets/demo.yaml``);
            ``paper`` or none: the bundles' own configs (the paper's sizes).
        spade_preset: the SPADE bundle's preset, where it differs from ``preset`` (``paper``: its own configs).
        mask_bundle: the mask bundle's folder (trained weights in its ``models/``).
        spade_bundle: the SPADE bundle's folder (trained weights in its ``models/``).
        mask_overrides: further config values for the mask bundle (e.g. another ``ckpt_dir``).
        spade_overrides: further config values for the SPADE bundle.
        tracking_uri: an MLflow tracking URI (``http://127.0.0.1:5000``, ``sqlite:///mlruns.db``):
            one parent run with this command's settings and the pair manifest, and both bundle
            runs (``--tracking mlflow``) nested under it; default: no tracking.
        nproc_per_node: processes per stage; above 1 each bundle runs under ``torchrun`` with its
            ``multi_gpu_inference.yaml`` (one GPU per process with CUDA, gloo on CPUs). The files do
            not depend on this number; a stage killed mid-way keeps its finished samples on a rerun.

    Returns:
        The pair manifest's path.
    """
    from shared.sampling.schedulers import SAMPLERS

    for flag, sampler in (("mask_sampler", mask_sampler), ("image_sampler", image_sampler)):
        if sampler not in SAMPLERS:
            raise InputError(f"--{flag}: expected one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if not isinstance(nproc_per_node, int) or isinstance(nproc_per_node, bool) or nproc_per_node < 1:
        raise InputError(f"nproc_per_node: expected an integer >= 1, got {nproc_per_node!r}")
    output_dir = Path(output_dir).resolve()
    mask_bundle, spade_bundle = Path(mask_bundle).resolve(), Path(spade_bundle).resolve()
    for bundle in (mask_bundle, spade_bundle):
        if not (bundle / "configs" / "inference.yaml").is_file():
            raise InputError(f"{bundle}: not a bundle folder (no configs/inference.yaml)")
    spade_preset = preset if spade_preset is None else spade_preset
    mask_configs = ["configs/inference.yaml", *preset_overlay(preset)]
    spade_configs = ["configs/inference.yaml", *preset_overlay(spade_preset)]
    for bundle, configs in ((mask_bundle, mask_configs), (spade_bundle, spade_configs)):
        if not (bundle / configs[-1]).is_file():
            raise InputError(f"{bundle}: no preset {Path(configs[-1]).stem!r} ({configs[-1]})")
    label_maps = output_dir / "label_maps"
    mask_settings: dict[str, Any] = {
        "num_samples": num_samples, "num_inference_steps": mask_steps, "seed": seed, "output_dir": str(label_maps),
        "sampler": mask_sampler,
    }  # fmt: skip
    if conditions is not None:
        mask_settings["conditions"] = conditions
    if guidance_scale is not None:
        mask_settings["guidance_scale"] = guidance_scale
    settings = {"num_samples": num_samples, "conditions": conditions, "guidance_scale": guidance_scale,
                "mask_sampler": mask_sampler, "mask_steps": mask_steps, "image_sampler": image_sampler,
                "image_steps": image_steps, "seed": seed, "preset": preset, "spade_preset": spade_preset}  # fmt: skip
    spade_settings = {"label_maps": str(label_maps), "num_inference_steps": image_steps, "seed": seed,
                      "output_dir": str(output_dir), "sampler": image_sampler}  # fmt: skip
    mask_values = {**mask_settings, **(mask_overrides or {})}
    spade_values = {**spade_settings, **(spade_overrides or {})}
    if tracking_uri is None:
        run_bundle(mask_bundle, mask_configs, mask_values, "label maps (ventricle_mask_ldm)",
                   nproc_per_node=nproc_per_node)  # fmt: skip
        run_bundle(spade_bundle, spade_configs, spade_values, "images (spade_mri_ldm)",
                   nproc_per_node=nproc_per_node)  # fmt: skip
    else:
        from shared.tracking import PARENT_RUN_ENV

        tracking = {"tracking": "mlflow", "tracking_uri": str(tracking_uri)}
        with ParentRun(str(tracking_uri), settings) as parent:
            env = {PARENT_RUN_ENV: parent.run_id}
            run_bundle(mask_bundle, mask_configs, {**mask_values, **tracking},
                       "label maps (ventricle_mask_ldm)", env, nproc_per_node)  # fmt: skip
            run_bundle(spade_bundle, spade_configs, {**spade_values, **tracking},
                       "images (spade_mri_ldm)", env, nproc_per_node)  # fmt: skip
            parent.log_artifacts([output_dir / "manifest.csv", output_dir / "mosaic.png"])
    manifest = output_dir / "manifest.csv"
    logger.info("%d labelled pairs in %s (manifest %s)", len(read_csv(manifest)), output_dir, manifest.name)
    return manifest

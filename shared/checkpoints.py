"""Finding the checkpoint to resume from."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _checkpoint_pattern(prefix: str) -> re.Pattern[str]:
    """File names of ``CheckpointSaver``'s interval checkpoints: ``<prefix>_checkpoint_epoch=N.pt``."""
    return re.compile(rf"^{re.escape(prefix)}_.*epoch=(\d+)\.pt$")


def latest_checkpoint(folder: str | os.PathLike, prefix: str) -> str | None:
    """Newest ``<prefix>_*epoch=<number>.pt`` written by ``monai.handlers.CheckpointSaver`` in ``folder``.

    Returns:
        Its path, or ``None`` when there is none (a fresh run).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    pattern = _checkpoint_pattern(prefix)
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := pattern.match(p.name))]
    return str(max(found)[1]) if found else None


def _load_checkpoint(path: str | os.PathLike) -> dict[str, Any] | None:
    """The checkpoint's content on the CPU, or ``None`` when it cannot be read (e.g. truncated)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None


def latest_whole_checkpoint(folder: str | os.PathLike, prefix: str) -> tuple[str | None, dict[str, Any] | None]:
    """The newest ``<prefix>_*epoch=N.pt`` of ``folder`` that loads, and its content.

    Newer ones that cannot be read (left half-written by a killed run) are removed, with a warning.

    Returns:
        ``(path, content)``, or ``(None, None)`` when there is no whole checkpoint (a fresh run).
    """
    while (path := latest_checkpoint(folder, prefix)) is not None:
        saved = _load_checkpoint(path)
        if saved is not None:
            return path, saved
        logger.warning("%s: cannot be read (a run killed while writing it?); removed", path)
        Path(path).unlink(missing_ok=True)
    return None, None


def make_resumable(
    trainer: Any,
    save_dir: str | os.PathLike,
    prefix: str,
    objects: dict[str, Any],
    map_location: Any = "cpu",
    save_interval: int = 1,
) -> str | None:
    """Save ``objects`` + the trainer every ``save_interval`` epochs, and resume from the newest save.

    Attaches a ``monai.handlers.CheckpointSaver`` (the newest checkpoint is kept,
    ``<prefix>_checkpoint_epoch=N.pt``, the older one removed once the new one is written) and,
    when such a file exists, a ``monai.handlers.CheckpointLoader`` that restores networks, optimisers and the epoch
    counter, so running the same command again continues where the last run stopped.
    Lives here rather than in the configs because the checkpoint must hold the trainer
    that its own handlers are attached to.

    Returns:
        The checkpoint resumed from, or ``None`` for a fresh run.

    MONAI writes checkpoints in place (not atomically), so a run killed while writing one
    leaves it truncated: such files are removed and the newest whole one is resumed from
    (:func:`latest_whole_checkpoint`).

    Raises:
        InputError: the newest checkpoint holds networks of another architecture or config
            (see :func:`check_resumable`).
    """
    from monai.handlers import CheckpointLoader, CheckpointSaver

    to_save = {**objects, "trainer": trainer}
    resume_from, saved = latest_whole_checkpoint(save_dir, prefix)
    if resume_from is not None:
        check_resumable(resume_from, objects, saved)
        CheckpointLoader(load_path=resume_from, load_dict=to_save, map_location=map_location).attach(trainer)
    from shared.distributed import is_rank_zero

    if not is_rank_zero():  # under torchrun only rank 0 writes checkpoints
        return resume_from
    # ignite removes the previous checkpoint *before* it writes the next (n_saved=1), and MONAI writes
    # in place, so a run killed mid-write would keep no whole checkpoint: keep every save (n_saved=None)
    # and drop the older ones after each new one is written (this handler runs after the saver's)
    CheckpointSaver(
        save_dir=str(save_dir), save_dict=to_save, file_prefix=prefix, save_interval=save_interval, n_saved=None
    ).attach(trainer)
    from ignite.engine import Events

    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: prune_older_checkpoints(save_dir, prefix))
    return resume_from


def prune_older_checkpoints(folder: str | os.PathLike, prefix: str) -> None:
    """Delete every ``<prefix>_*epoch=N.pt`` in ``folder`` but the newest."""
    newest = latest_checkpoint(folder, prefix)
    pattern = _checkpoint_pattern(prefix)
    for path in Path(folder).iterdir():
        if pattern.match(path.name) and str(path) != newest:
            path.unlink(missing_ok=True)


def load_weights(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """State dict saved by ``CheckpointSaver`` (``{"model": ...}`` or a bare state dict), on ``map_location``."""
    import torch

    from shared.io import InputError

    if not Path(path).is_file():
        raise InputError(f"{path}: missing model weights; train this stage first")
    state = torch.load(path, map_location=map_location, weights_only=True)
    return state.get("model", state) if isinstance(state, dict) and "model" in state else state


def check_resumable(path: str | os.PathLike, objects: dict[str, Any], saved: dict[str, Any] | None = None) -> None:
    """Refuse to resume from ``path`` when its networks do not fit ``objects`` (names, shapes).

    ``saved``: the checkpoint's content when already loaded (else it is read from ``path``).

    Raises:
        InputError: ``<file>: ...`` naming the first missing, unexpected or differently shaped
            weight, or an unreadable file.
    """
    import torch

    from shared.io import InputError

    if saved is None:
        saved = _load_checkpoint(path)
    if saved is None:
        raise InputError(f"{path}: cannot read this checkpoint; remove it to start afresh")
    hint = "another architecture or config wrote it; remove it (or use another ckpt_dir) to train afresh"
    for name, obj in objects.items():
        if not isinstance(obj, torch.nn.Module):
            continue
        if name not in saved:
            raise InputError(f"{path}: holds no '{name}' network; {hint}")
        module = obj.module if hasattr(obj, "module") and isinstance(obj.module, torch.nn.Module) else obj
        wanted = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        found = {k.removeprefix("module."): tuple(v.shape) for k, v in saved[name].items()}
        for key in sorted(set(wanted) | set(found)):
            if wanted.get(key) != found.get(key):
                raise InputError(
                    f"{path}: '{name}' weight {key} is {found.get(key, 'absent')} there, "
                    f"{wanted.get(key, 'absent')} in this config; {hint}"
                )


def final_weights_saver(**kwargs: Any) -> Any:
    """MONAI's ``CheckpointSaver`` whose final file (``final_filename``, e.g. ``model.pt``) is written
    only when training completes, never from the weights of a run that failed or was interrupted
    (MONAI's own saves it on an exception too). Takes ``CheckpointSaver``'s arguments.
    """
    from monai.handlers import CheckpointSaver

    class FinalWeightsSaver(CheckpointSaver):
        def exception_raised(self, engine: Any, e: Exception) -> None:
            raise e

    return FinalWeightsSaver(**kwargs)

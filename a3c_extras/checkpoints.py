"""Checkpoints: written atomically, loaded safely (weights_only=True), checked before use."""

import contextlib
import os
import re
from pathlib import Path

import torch

from a3c_extras.errors import first_line

FORMAT = "a3c-breakout-checkpoint-1"


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message is one line meant for the user."""


def checkpoint_path(path) -> Path:
    """A checkpoint file, or a run directory meaning its checkpoint.pt."""
    path = Path(path)
    return path / "checkpoint.pt" if path.is_dir() else path


def save_checkpoint(path, payload: dict) -> None:
    """Write beside the target, flush to disk, then rename over it: a kill at any moment leaves either
    the old or the new checkpoint, never half of one. A write that fails (a full disk) leaves the old one
    and removes its half-written copy."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def checkpoint(model, optimizer, counter: int, elapsed, best_reward, args, *, frame_stats: dict | None = None) -> dict:
    """The one definition of what a checkpoint holds (the format tag is added when saving). `frame_stats`:
    the frame normaliser's statistics training reached (a3c_extras/frame_stats.py: latest(counts.frames)), which
    the evaluation can play with frozen (--frozen-stats); checkpoints without them still load."""
    data = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "counter": counter,  # agent steps of the run, over all workers and sittings
        "elapsed": elapsed,  # seconds of training, over all sittings
        "best_reward": best_reward,
        "args": vars(args),
    }
    if frame_stats is not None:
        data["frame_stats"] = frame_stats  # {mean, std, frames, source}: plain numbers and a string
    return data


def unreadable(path, error: Exception) -> str:
    """Why torch.load refused a file, in one line. A weights-only load's refusal (a pickle holding objects
    other than tensors and plain containers) is a paragraph of advice on loading it unsafely: named here by
    what it found instead."""
    text = str(error)
    if "Weights only load failed" in text:
        found = re.search(r"GLOBAL (\S+)", text)
        what = f": {found.group(1)}" if found else ""
        return f"{path} is not a checkpoint of this project (it holds objects a weights-only load refuses{what})"
    return f"{path} is not a readable checkpoint (truncated or foreign file: {first_line(error, 120)})"


def load_checkpoint(path, num_actions: int | None = None) -> dict:
    """Load and check a checkpoint; any problem becomes a CheckpointError with a clear message."""
    path = checkpoint_path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, zip and I/O errors alike: the file is unusable
        raise CheckpointError(unreadable(path, exc)) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of this project")
    saved_actions = data["model"]["actor_linear.weight"].shape[0]
    if num_actions is not None and saved_actions != num_actions:
        raise CheckpointError(
            f"{path} was trained on {data['args'].get('env_name')} with {saved_actions} actions; "
            f"this environment has {num_actions}"
        )
    return data

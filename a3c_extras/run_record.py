"""The run's record: config.json, progress.csv (appended and flushed as episodes end) and the curve."""

import csv
import json
import platform
import subprocess
from pathlib import Path

import numpy as np

FIELDS = ["kind", "time_s", "total_steps", "worker", "reward", "length"]


def write_config(path: Path, args, extra: dict) -> None:
    import ale_py
    import gymnasium
    import torch

    config = {
        "args": vars(args),
        "seed": args.seed,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "gymnasium": gymnasium.__version__,
            "ale_py": ale_py.__version__,
        },
        "git_commit": git_commit(),
        **extra,
    }
    path.write_text(json.dumps(config, indent=2) + "\n")


def git_commit() -> str | None:
    """The commit of this code, when it is a git checkout and git is installed."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


class ProgressLog:
    """progress.csv: one row per evaluation episode (kind=eval, worker empty) and per training game
    (kind=train, raw unclipped return). Opened for appending, so a resumed run continues it."""

    def __init__(self, path: Path):
        self.path = path
        new = not path.exists() or path.stat().st_size == 0
        self.file = open(path, "a", newline="")
        self.writer = csv.writer(self.file)
        if new:
            self.writer.writerow(FIELDS)
            self.file.flush()

    def write(self, kind: str, time_s: float, total_steps: int, worker, reward: float, length: int) -> None:
        self.writer.writerow([kind, f"{time_s:.1f}", total_steps, "" if worker is None else worker,
                              reward, length])
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def read_progress(path: Path) -> dict:
    """The CSV as arrays per kind: {"eval": (steps, rewards, seconds), "train": (steps, rewards, seconds)},
    seconds being the run's training time when the row was written."""
    rows = {"eval": ([], [], []), "train": ([], [], [])}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("kind") in rows:
                rows[row["kind"]][0].append(int(row["total_steps"]))
                rows[row["kind"]][1].append(float(row["reward"]))
                rows[row["kind"]][2].append(float(row["time_s"]))
    return {k: tuple(np.array(column) for column in columns) for k, columns in rows.items()}


def moving_average(steps: np.ndarray, rewards: np.ndarray, window: int = 100):
    """Training returns ordered by step (workers write them slightly out of order), averaged over the
    last `window` games: (steps, averages), from the window-th game on."""
    order = np.argsort(steps, kind="stable")
    steps, rewards = steps[order], rewards[order]
    w = min(window, len(rewards))
    return steps[w - 1 :], np.convolve(rewards, np.ones(w) / w, mode="valid")


def training_curve(steps: np.ndarray, rewards: np.ndarray, seconds: np.ndarray, window: int = 100):
    """The moving average of training returns (see moving_average) with the hours of training at each of
    its points: (steps, hours, averages)."""
    curve_steps, curve = moving_average(steps, rewards, window)
    return curve_steps, np.sort(seconds)[len(seconds) - len(curve) :] / 3600, curve


def plot_learning_curve(csv_path: Path, png_path: Path, title: str, window: int = 100) -> None:
    """Evaluation rewards and the moving average of training returns, against total agent steps (left)
    and hours of training (right; over all sittings, the pauses between them left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = read_progress(csv_path)
    train, evals = data["train"], data["eval"]
    w = min(window, len(train[1]))
    curve_steps, curve_hours, curve = training_curve(*train, w) if w else ([], [], [])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100, sharey=True)
    for ax, x_label, curve_x, eval_x in ((axes[0], "total agent steps", curve_steps, evals[0]),
                                         (axes[1], "hours of training", curve_hours, evals[2] / 3600)):
        if len(curve):
            ax.plot(curve_x, curve, color="tab:blue", label=f"training return, mean of last {w} games")
        if len(evals[1]):
            ax.plot(eval_x, evals[1], "o-", color="tab:orange", markersize=3, linewidth=1, label="evaluation (greedy)")
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(loc="upper left")
    axes[0].set_ylabel("episode reward")
    fig.suptitle(title)
    fig.tight_layout()
    tmp = png_path.with_name(png_path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(png_path)

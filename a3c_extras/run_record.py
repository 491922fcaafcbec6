"""The run's record: the run directory with config.json, progress.csv (appended and flushed as episodes end),
events.csv (restarts, failed writes), the checkpoint and the learning curve."""

import csv
import gc
import json
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from a3c_extras.checkpoints import save_checkpoint
from a3c_extras.errors import describe_os_error

FIELDS = ["kind", "time_s", "total_steps", "worker", "reward", "length"]
EVENT_FIELDS = ["time_utc", "time_s", "total_steps", "event", "process", "detail"]
REPEAT_AFTER = 60  # seconds before a record that keeps failing (progress.csv at every game) is named again


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
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


class CsvLog:
    """A CSV file opened for appending (a resumed run continues it), each row flushed as it is written."""

    def __init__(self, path: Path, fields: list[str]):
        self.path = path
        new = not path.exists() or path.stat().st_size == 0
        self.file = open(path, "a", newline="")
        self.writer = csv.writer(self.file)
        if new:
            self.writer.writerow(fields)
            self.file.flush()

    def row(self, *values) -> None:
        self.writer.writerow(values)
        self.file.flush()

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass  # what could not be flushed is lost; it was reported when it failed


class ProgressLog(CsvLog):
    """progress.csv: one row per evaluation episode (kind=eval, worker empty; kind=eval_cut for one the
    stuck-agent guard cut short, not a finished game) and per training game (kind=train, raw unclipped
    return)."""

    def __init__(self, path: Path):
        super().__init__(path, FIELDS)

    def write(self, kind: str, time_s: float, total_steps: int, worker, reward: float, length: int) -> None:
        self.row(kind, f"{time_s:.1f}", total_steps, "" if worker is None else worker, reward, length)


class RunRecord:
    """The run directory and everything the run writes there. Only creating it may fail (the caller says so in one
    line); afterwards a write that fails (a full disk, a read-only directory) costs one line on stderr and a row in
    events.csv when that can still be written, never the run: the previous checkpoint stays intact (checkpoints
    are written beside it, then renamed over it) and the next interval tries again."""

    def __init__(self, run_dir, args, extra: dict, resumed: bool):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        config_name = "config.json" if not resumed else f"config-resume-{datetime.now():%Y%m%d-%H%M%S}.json"
        write_config(self.dir / config_name, args, extra)
        self.progress = ProgressLog(self.dir / "progress.csv")
        self.events = CsvLog(self.dir / "events.csv", EVENT_FIELDS)
        self.checkpoint_path = self.dir / "checkpoint.pt"
        self.last_good = None  # (steps, when) of the last checkpoint this sitting wrote
        self.failed_writes = 0
        self.last_named = {}  # record -> when its failure was last printed

    def event(self, time_s: float, steps: int, event: str, process: str, detail: str = "") -> None:
        """A row of events.csv: a restart, a failed write."""
        try:
            self.events.row(
                datetime.now(UTC).isoformat(timespec="seconds"), f"{time_s:.1f}", steps, event, process, detail
            )
        except OSError:
            pass  # the failure that made this row is printed already

    def write_failed(self, what: str, why: str, time_s: float, steps: int, then: str = "training goes on") -> None:
        """Count a failed write, print it in one line (a record failing again and again: once a minute) and log it."""
        self.failed_writes += 1
        now = time.time()
        if now - self.last_named.get(what, -REPEAT_AFTER) >= REPEAT_AFTER:
            self.last_named[what] = now
            print(f"main.py: {what} not written: {why}; {then}", file=sys.stderr, flush=True)
        self.event(time_s, steps, "write failed", "main" if what != "best.pt" else "test", f"{what}: {why}")

    def game(self, kind: str, time_s: float, steps: int, worker, reward: float, length: int) -> None:
        try:
            self.progress.write(kind, time_s, steps, worker, reward, length)
        except OSError as error:
            self.write_failed("progress.csv", describe_os_error(error), time_s, steps)

    def last_good_description(self) -> str:
        if self.last_good is not None:
            steps, when = self.last_good
            return f"the last good one, of step {steps:,} ({when:%H:%M:%S}), is {self.checkpoint_path}"
        if self.checkpoint_path.exists():
            return f"the last good one is {self.checkpoint_path} (from before this sitting)"
        return "no checkpoint of this run was written"

    def save_checkpoint(self, payload: dict, time_s: float, final: bool = False, retry_in: float = 0) -> bool:
        """Write checkpoint.pt; False (after one line) if it could not be written."""
        try:
            save_checkpoint(self.checkpoint_path, payload)
        except Exception as error:  # noqa: BLE001 - OSError, or torch's RuntimeError of a failed write
            then = f"{self.last_good_description()}; " + ("" if final else f"trying again in {retry_in:g} s")
            self.last_named.pop("checkpoint", None)  # each checkpoint that fails is named
            self.write_failed("checkpoint", describe_os_error(error), time_s, payload["counter"], then.rstrip("; "))
            return False
        self.last_good = (payload["counter"], datetime.now())
        return True

    def plot_curve(self, title: str, time_s: float, steps: int) -> None:
        try:
            plot_learning_curve(self.dir / "progress.csv", self.dir / "learning_curve.png", title)
        except Exception as error:  # noqa: BLE001 - matplotlib's errors of a failed write are not all OSError
            self.write_failed("learning_curve.png", describe_os_error(error), time_s, steps)

    def close(self) -> None:
        self.progress.close()
        self.events.close()


def read_progress(path: Path) -> dict:
    """The CSV as arrays per kind: {"eval": (steps, rewards, seconds), "train": (steps, rewards, seconds)},
    seconds being the run's training time when the row was written. Finished games only: evaluation
    episodes cut short (kind eval_cut) are left out."""
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


def first_reached(steps: np.ndarray, hours: np.ndarray, curve: np.ndarray, level: float):
    """(agent steps, hours) of a curve's first point at or above `level`; None if it never gets there."""
    reached = np.flatnonzero(curve >= level)
    return (int(steps[reached[0]]), float(hours[reached[0]])) if len(reached) else None


def levels_reached(csv_path: Path, levels, train_window: int = 100, eval_window: int = 5) -> dict:
    """When a run first reached each level: {"train": [...], "eval": [...]}, one (steps, hours) or None
    per level, for the mean of the last `train_window` training games and of the last `eval_window`
    finished evaluation episodes (greedy, the test process's). A curve of fewer games than its window
    reaches nothing."""
    progress, reached = read_progress(csv_path), {}
    for kind, window in (("train", train_window), ("eval", eval_window)):
        steps, rewards, seconds = progress[kind]
        curve = training_curve(steps, rewards, seconds, window) if len(rewards) >= window else ([], [], np.array([]))
        reached[kind] = [first_reached(*curve, level) for level in levels]
    return reached


def plot_learning_curve(csv_path: Path, png_path: Path, title: str, window: int = 100) -> None:
    """Evaluation rewards and the moving average of training returns, against total agent steps (left)
    and hours of training (right; over all sittings, the pauses between them left out)."""
    draw_learning_curve(csv_path, png_path, title, window)
    # A figure is a web of reference cycles, freed only by the cyclic collector, which the main process (few
    # allocations between saves) seldom runs: without this, each redraw of a long run's curve kept ~6 MB.
    # The figure goes in the second pass (the first frees what still pointed to it), hence the loop.
    for _ in range(3):
        if gc.collect() == 0:
            break


def draw_learning_curve(csv_path: Path, png_path: Path, title: str, window: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = read_progress(csv_path)
    train, evals = data["train"], data["eval"]
    w = min(window, len(train[1]))
    curve_steps, curve_hours, curve = training_curve(*train, w) if w else ([], [], [])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100, sharey=True)
    for ax, x_label, curve_x, eval_x in (
        (axes[0], "total agent steps", curve_steps, evals[0]),
        (axes[1], "hours of training", curve_hours, evals[2] / 3600),
    ):
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

"""best.pt: the weights of the test process's best mean of --best-window finished evaluation episodes."""

from collections import deque
from pathlib import Path

from a3c_extras import frame_stats
from a3c_extras.checkpoints import checkpoint, save_checkpoint
from a3c_extras.errors import describe_os_error


class BestWeights:
    """Saves best.pt when the mean of the last `window` finished episodes is the best so far: one lucky game does
    not decide (in the deterministic game a greedy agent may replay one memorised game). The weights saved are the
    latest of the window, with worker 0's frame statistics. `counts.best` is the run's shared best score (the test
    process alone writes it), so that a resumed run and a replaced test process go on from it."""

    def __init__(self, counts, path: str):
        self.counts, self.path, self.rewards = counts, path, deque(maxlen=1000)

    def add(self, reward: float, num_steps: int, model, params) -> str | None:
        """A finished episode's reward; why best.pt could not be written, if it could not (training goes on)."""
        self.rewards.append(reward)
        window = params.best_window
        if len(self.rewards) < window:
            return None
        score = sum(list(self.rewards)[-window:]) / window
        if score <= self.counts.best.value:
            return None
        self.counts.best.value = score
        stats = frame_stats.latest(self.counts.frames)
        try:
            save_checkpoint(Path(self.path), checkpoint(model, None, num_steps, None, score, params, frame_stats=stats))
        except Exception as error:  # noqa: BLE001 - a full disk, a read-only directory
            return describe_os_error(error)
        return None

"""The frame normaliser's statistics in checkpoints, and the evaluation with them frozen
(python test.py --checkpoint ... --frozen-stats).

The course normalises each frame with a running mean and standard deviation (MyNormalizedEnv, and
fast_frames.Normalized on the fast path): every game has its own normaliser, and the evaluation command
carries one across its episodes, so one very long game can shift what the next games look like
(docs/evaluation.md). Frozen, the evaluation normalises every frame with the statistics training
reached instead: (x - mean) / (std + 1e-8), the same values from the first frame of the first episode
to the last.

Whose statistics: those of worker 0's first game. The network's weights were learnt on frames that the
workers' own normalisers normalised, so a worker's statistics at save time are the ones the weights
were being fitted to; each of them averages over about the last 10,000 frames of the same game, so the
workers' games agree closely and any one of them stands for all. Worker 0 and its first game exist in
every run (any --num-processes, any --envs-per-worker, a restarted worker 0 publishes again). The test
process's normaliser would be the wrong source: it sees only its own greedy episodes, between waits,
and is shifted by the very long games that freezing is meant to keep out.

How they reach a checkpoint: worker 0 publishes them (`publish`, through its link at every step on
either rollout) into three numbers of the run's shared memory (links.SharedCounts.frames: mean, std,
frames), which it alone writes; whoever saves a checkpoint (the main process, the test process for
best.pt) reads the latest (`latest(frames)`) and hands them to checkpoints.checkpoint(...,
frame_stats=...). A checkpoint without them (saved before they were kept, or on a cluster, where the
workers run on other machines) cannot be evaluated frozen: --frozen-stats says so in one line.
"""

import math

import gymnasium as gym
import numpy as np
from gymnasium.spaces import Box

from a3c_extras.checkpoints import CheckpointError

SOURCE = "worker 0, game 0"
NORMALISER = ("state_mean", "state_std", "alpha", "num_steps")  # MyNormalizedEnv's and fast_frames.Normalized's


def is_normaliser(env) -> bool:
    return all(hasattr(env, name) for name in NORMALISER)


def of_normaliser(env) -> dict | None:
    """The statistics a running normaliser applies now, bias-corrected as it applies them: {mean, std,
    frames, source}; None before its first frame, or for an environment that is not one (the tests' games)."""
    if not is_normaliser(env) or env.num_steps == 0:
        return None
    correction = 1 - pow(env.alpha, env.num_steps)
    return {
        "mean": float(env.state_mean / correction),
        "std": float(env.state_std / correction),
        "frames": int(env.num_steps),
        "source": SOURCE,
    }


def publish(frames, env) -> None:
    """Worker 0's first game's statistics into the run's shared `frames` (mean, std, frames); nothing for a
    game without the course's normaliser (the tests' games) or before its first frame."""
    stats = of_normaliser(env)
    if stats is not None:
        frames[0], frames[1], frames[2] = stats["mean"], stats["std"], stats["frames"]


def valid(stats) -> bool:
    return (
        isinstance(stats, dict)
        and all(isinstance(stats.get(key), int | float) for key in ("mean", "std", "frames"))
        and math.isfinite(stats["mean"])
        and math.isfinite(stats["std"])
        and stats["std"] >= 0
        and stats["frames"] > 0
    )


def latest(frames) -> dict | None:
    """The statistics worker 0 last published in the run's shared `frames`, for a checkpoint; None if there
    are none yet (a checkpoint is saved without them rather than not at all)."""
    if frames is None:
        return None
    stats = {"mean": frames[0], "std": frames[1], "frames": int(frames[2]), "source": SOURCE}
    return stats if valid(stats) else None


def of_checkpoint(data: dict, path) -> dict:
    """A checkpoint's statistics, for --frozen-stats; a CheckpointError (one line) when it has none."""
    stats = data.get("frame_stats")
    if stats is None:
        raise CheckpointError(
            f"{path} holds no frame statistics (saved before checkpoints kept them, or before worker 0 "
            "published any): --frozen-stats needs them; without it the evaluation keeps the running normalisation"
        )
    if not valid(stats):
        raise CheckpointError(f"{path} holds unusable frame statistics: {stats}")
    return stats


class Frozen(gym.ObservationWrapper):
    """The course's normalisation with fixed statistics: (x - mean) / (std + 1e-8) in float32, the
    channel axis added as MyNormalizedEnv adds it; nothing is updated from one frame to the next."""

    def __init__(self, env: gym.Env, stats: dict):
        super().__init__(env)
        self.mean, self.std = np.float32(stats["mean"]), np.float32(stats["std"])
        self.observation_space = Box(-np.inf, np.inf, env.observation_space.shape, dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        normalized = (observation - self.mean) / (self.std + np.float32(1e-8))
        return normalized.reshape(self.observation_space.shape)


def freeze(env: gym.Env, stats: dict) -> Frozen:
    """create_atari_env's game with its running normaliser (the outermost wrapper) replaced by Frozen."""
    if not is_normaliser(env):
        raise ValueError(f"{type(env).__name__} is not the course's frame normaliser")
    return Frozen(env.env, stats)

"""Redraw docs/overlay.png: a few steps of Breakout played by a fresh model (sampled actions, the ball
served), the overlay of the last one.

    python tools/overlay_picture.py docs/overlay.png
"""

import sys
import threading
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from a3c_extras.atari import options  # noqa: E402
from a3c_extras.evaluation import play_episode  # noqa: E402
from a3c_extras.overlay import compose_frame, save_picture  # noqa: E402
from envs import create_atari_env  # noqa: E402
from model import ActorCritic  # noqa: E402


def overlay_picture(path, steps: int = 40, seed: int = 1) -> np.ndarray:
    torch.manual_seed(seed)
    env = create_atari_env("BreakoutDeterministic-v4", link=options(render=True, fire_reset=True))
    env.reset(seed=seed)
    model = ActorCritic(env.observation_space.shape[0], env.action_space)
    names = env.unwrapped.get_action_meanings()
    done, frames = threading.Event(), []

    def on_step(observation, probs, value):
        frames.append(compose_frame(env.render(), observation, probs, value, names))
        if len(frames) >= steps:
            done.set()

    play_episode(env, model, steps + 1, sample=True, rng=np.random.default_rng(seed), on_step=on_step, stop_event=done)
    env.close()
    save_picture(path, frames[-1])
    return frames[-1]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/overlay_picture.py PICTURE.png")
    height, width = overlay_picture(sys.argv[1]).shape[:2]
    print(f"wrote {sys.argv[1]} ({width}x{height})")

"""A tiny pixel game for the learning test: catch a falling dot with a paddle, 42x42 frames.

The dot starts in one of 7 columns and falls 6 rows a step; the paddle (6 pixels wide) moves one
column left or right, or stays. Catching the dot gives +1, missing it -1; an episode is one dot
(7 steps). Random play catches about one dot in five; a good policy catches them all."""

import gymnasium as gym
import numpy as np
from gymnasium.spaces import Box, Discrete

COLUMNS, WIDTH, STEPS = 7, 6, 7


class Catch(gym.Env):
    def __init__(self, nan_reward_at: int | None = None):
        self.observation_space = Box(0.0, 1.0, (1, 42, 42), dtype=np.float32)
        self.action_space = Discrete(3)  # stay, left, right
        self.nan_reward_at = nan_reward_at  # inject a non-finite reward at this global step (tests)
        self.total_steps = 0

    def _frame(self) -> np.ndarray:
        frame = np.zeros((1, 42, 42), dtype=np.float32)
        frame[0, self.row * WIDTH : self.row * WIDTH + 2, self.dot * WIDTH + 2 : self.dot * WIDTH + 4] = 1.0
        frame[0, 40:42, self.paddle * WIDTH : (self.paddle + 1) * WIDTH] = 1.0
        return frame

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.dot = int(self.np_random.integers(COLUMNS))
        self.paddle = int(self.np_random.integers(COLUMNS))
        self.row = 0
        return self._frame(), {}

    def step(self, action):
        self.paddle = int(np.clip(self.paddle + (0, -1, 1)[action], 0, COLUMNS - 1))
        self.row += 1
        self.total_steps += 1
        done = self.row == STEPS - 1
        reward = (1.0 if self.paddle == self.dot else -1.0) if done else 0.0
        if self.nan_reward_at is not None and self.total_steps == self.nan_reward_at:
            reward = float("nan")
        return self._frame(), reward, done, False, {}


def make_catch(args) -> Catch:
    return Catch(getattr(args, "nan_reward_at", None))

"""A tiny pixel game for the learning tests: catch a falling dot with a paddle, 42x42 frames.

The dot starts in one of 7 columns and falls one row a step; the paddle moves one column left or
right, or stays. Catching the dot gives +1, missing it -1; an episode is one dot (6 steps). Random
play scores about -0.73 on average; a good policy catches every dot (+1).

The frame is drawn from the paddle's point of view: the paddle always in the middle, the dot where it
is relative to it. In a fixed view the right move compares two positions (the dot's and the paddle's),
which a freshly initialised network, nearly linear at first, cannot express: A3C then sat on a plateau
of uniform play whose length varied from run to run (from 14k to more than 40k agent steps, half of
the 2-worker runs still on it at 40k), so a learning test with a fixed budget passed or failed with
the seed and with how the OS happened to interleave the workers. Seen from the paddle, the right move
is a linear function of the frame, and two workers learn it within 4k-10k steps."""

import gymnasium as gym
import numpy as np
from gymnasium.spaces import Box, Discrete

COLUMNS, STEPS = 7, 7
ROW, CELL = 6, 3  # pixels: the dot falls one row of 6 a step; one cell of the centred view


class Catch(gym.Env):
    def __init__(self, nan_reward_at: int | None = None, reward_scale: float = 1.0):
        self.observation_space = Box(0.0, 1.0, (1, 42, 42), dtype=np.float32)
        self.action_space = Discrete(3)  # stay, left, right
        self.nan_reward_at = nan_reward_at  # inject a non-finite reward at this global step (tests)
        self.reward_scale = reward_scale  # a catch scores +reward_scale, a miss -reward_scale
        self.total_steps = 0

    def _frame(self) -> np.ndarray:
        """The view centred on the paddle: the dot is drawn in one of 13 cells (3 pixels wide) by its
        column relative to the paddle's, the paddle always in the middle at the bottom."""
        frame = np.zeros((1, 42, 42), dtype=np.float32)
        left = (self.dot - self.paddle + COLUMNS - 1) * CELL + 2
        frame[0, self.row * ROW : self.row * ROW + 2, left : left + 2] = 1.0
        middle = (COLUMNS - 1) * CELL + 2
        frame[0, 40:42, middle - 2 : middle + 4] = 1.0
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
        reward = (1.0 if self.paddle == self.dot else -1.0) * self.reward_scale if done else 0.0
        if self.nan_reward_at is not None and self.total_steps == self.nan_reward_at:
            reward = float("nan")
        return self._frame(), reward, done, False, {}


def make_catch(args) -> Catch:
    return Catch(getattr(args, "nan_reward_at", None), getattr(args, "reward_scale", 1.0))

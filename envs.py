"""The Atari environment of the course: frames cropped, shrunk to 42x42 and averaged to grey, then
normalised with running statistics. gymnasium and ale-py replace the course's gym and universe."""

import cv2
import gymnasium as gym
import numpy as np
from gymnasium.spaces import Box

from a3c_extras import atari, fast_frames


def create_atari_env(env_id, render_mode=None, life_loss=False, fire_reset=False, fast=True):
    # Not in the course: legacy ids (BreakoutDeterministic-v4) mapped to today's, the opt-in departures
    # --life-loss and --fire-reset, and a render mode for videos.
    env = atari.make(env_id, render_mode, life_loss, fire_reset)
    if fast:  # the default: the same frames, bit for bit, computed faster (a3c_extras/fast_frames.py)
        return fast_frames.Normalized(fast_frames.Rescale42x42(env))
    env = AtariRescale42x42(env)
    env = NormalizedEnv(env)
    return env


def _process_frame42(frame):
    frame = frame[34:34 + 160, :160]
    # Two steps, 160 -> 80 -> 42: one resize straight to 42 would skip thin details such as the ball.
    frame = cv2.resize(frame, (80, 80))
    frame = cv2.resize(frame, (42, 42))
    frame = frame.mean(2)
    frame = frame.astype(np.float32)
    frame *= (1.0 / 255.0)
    frame = np.reshape(frame, [1, 42, 42])
    return frame


class AtariRescale42x42(gym.ObservationWrapper):

    def __init__(self, env=None):
        super().__init__(env)
        self.observation_space = Box(0.0, 1.0, [1, 42, 42], dtype=np.float32)

    def observation(self, observation):
        return _process_frame42(observation)


class NormalizedEnv(gym.ObservationWrapper):

    def __init__(self, env=None):
        super().__init__(env)
        self.observation_space = Box(-np.inf, np.inf, [1, 42, 42], dtype=np.float32)
        self.state_mean = 0
        self.state_std = 0
        self.alpha = 0.9999
        self.num_steps = 0

    def observation(self, observation):
        self.num_steps += 1
        self.state_mean = self.state_mean * self.alpha + \
            observation.mean() * (1 - self.alpha)
        self.state_std = self.state_std * self.alpha + \
            observation.std() * (1 - self.alpha)

        unbiased_mean = self.state_mean / (1 - pow(self.alpha, self.num_steps))
        unbiased_std = self.state_std / (1 - pow(self.alpha, self.num_steps))

        return (observation - unbiased_mean) / (unbiased_std + 1e-8)

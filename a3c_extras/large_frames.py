"""--frame-size 80 on the course's own path (--rollout classic): the course's frame processing
(envs.py: _process_frame42) without its last shrink to 42x42, written as the course writes it. The
course's MyNormalizedEnv normalises these frames as it does its own, and the fast path
(fast_frames.process_frame(frame, 80)) gives the same values bit for bit (tests/test_fast_frames.py)."""

import cv2
import gymnasium as gym
import numpy as np
from gymnasium.spaces import Box


def process_frame80(frame: np.ndarray) -> np.ndarray:
    """Crop rows 34..194 and columns 0..160, resize to 80x80, grey as the mean over RGB, float32 in [0, 1]:
    (80, 80), the channel axis added by the normaliser as for the course's frames."""
    frame = frame[34 : 34 + 160, :160]
    frame = cv2.resize(frame, (80, 80))
    frame = frame.mean(2)
    frame = frame.astype(np.float32)
    frame *= 1.0 / 255.0
    return frame


class Rescale80x80(gym.ObservationWrapper):
    """The course's MyAtariRescale42x42 for 80x80 frames."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = Box(0.0, 1.0, (1, 80, 80), dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return process_frame80(observation)

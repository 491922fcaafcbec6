"""The course's frame processing (envs.py: _process_frame42, NormalizedEnv), computed faster and giving
the same float32 values bit for bit (tests/test_fast_frames.py compares them on game frames)."""

import cv2
import gymnasium as gym
import numpy as np
from gymnasium.spaces import Box

# Grey level of a pixel, indexed by R + G + B (0..765): the mean of the three channels over 255, built
# with the course's own operations (float64 mean, cast to float32, times 1/255), so that looking it up
# gives bit for bit the values of frame.mean(2).astype(np.float32) / 255 at a fraction of the cost.
GREY = (np.arange(3 * 255 + 1) / 3.0).astype(np.float32)
GREY *= 1.0 / 255.0


def process_frame(frame: np.ndarray, size: int = 42) -> np.ndarray:
    """The course's _process_frame42 (size 42) or, with size 80, the same without its last shrink to 42x42
    (a3c_extras/large_frames.py): (1, size, size), float32."""
    if size not in (42, 80):
        raise ValueError(f"frames are 42x42 (the course's) or 80x80, not {size}x{size}")
    frame = frame[34 : 34 + 160, :160]
    frame = cv2.resize(frame, (80, 80))
    if size == 42:
        frame = cv2.resize(frame, (42, 42))
    channel_sum = frame[:, :, 0].astype(np.uint16)  # R + G + B fits in uint16
    channel_sum += frame[:, :, 1]
    channel_sum += frame[:, :, 2]
    return GREY.take(channel_sum)[np.newaxis]  # (1, size, size), float32


def process_frame42(frame: np.ndarray) -> np.ndarray:
    return process_frame(frame, 42)


class Rescale(gym.ObservationWrapper):
    """The course's MyAtariRescale42x42 (size 42), or its 80x80 frames (--frame-size 80)."""

    def __init__(self, env: gym.Env, size: int = 42):
        super().__init__(env)
        self.size = size
        self.observation_space = Box(0.0, 1.0, (1, size, size), dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return process_frame(observation, self.size)


class Normalized(gym.ObservationWrapper):
    """The course's running normalisation with fewer temporary arrays."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = Box(-np.inf, np.inf, env.observation_space.shape, dtype=np.float32)
        self.state_mean = 0.0
        self.state_std = 0.0
        self.alpha = 0.9999
        self.num_steps = 0

    def observation(self, observation: np.ndarray) -> np.ndarray:
        self.num_steps += 1
        # The frame's mean and standard deviation, computed as observation.mean() and .std() do
        # (float32 sums, divided by the count as a float64), the deviations kept for the std.
        frame_mean = observation.mean()
        deviations = observation - frame_mean
        np.multiply(deviations, deviations, out=deviations)
        frame_std = np.sqrt(observation.dtype.type(np.add.reduce(deviations, axis=None) / np.intp(observation.size)))
        self.state_mean = self.state_mean * self.alpha + frame_mean * (1 - self.alpha)
        self.state_std = self.state_std * self.alpha + frame_std * (1 - self.alpha)
        bias_correction = 1 - pow(self.alpha, self.num_steps)
        normalized = observation - self.state_mean / bias_correction
        normalized /= self.state_std / bias_correction + 1e-8
        return normalized

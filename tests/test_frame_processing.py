"""The frame processing of envs.py is written for speed; it must give, bit for bit, the values of the
course's plain formulas, here as the reference, on many frames of the real game and on random ones."""

import gymnasium as gym
import numpy as np

from envs import NormalizedEnv, _process_frame42, resolve_env_id


def course_process_frame42(frame: np.ndarray) -> np.ndarray:
    import cv2

    frame = frame[34 : 34 + 160, :160]
    frame = cv2.resize(frame, (80, 80))
    frame = cv2.resize(frame, (42, 42))
    frame = frame.mean(2, keepdims=True)
    frame = frame.astype(np.float32)
    frame *= 1.0 / 255.0
    return np.moveaxis(frame, -1, 0)


class CourseNormalizer:
    def __init__(self):
        self.state_mean = self.state_std = 0.0
        self.alpha = 0.9999
        self.num_steps = 0

    def observation(self, observation):
        self.num_steps += 1
        self.state_mean = self.state_mean * self.alpha + observation.mean() * (1 - self.alpha)
        self.state_std = self.state_std * self.alpha + observation.std() * (1 - self.alpha)
        unbiased_mean = self.state_mean / (1 - pow(self.alpha, self.num_steps))
        unbiased_std = self.state_std / (1 - pow(self.alpha, self.num_steps))
        return (observation - unbiased_mean) / (unbiased_std + 1e-8)


def raw_breakout_frames(count: int, seed: int = 0):
    env_id, kwargs = resolve_env_id("BreakoutDeterministic-v4")
    env = gym.make(env_id, **kwargs)
    frame, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield frame
        frame, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        if terminated or truncated:
            frame, _ = env.reset()


def test_frames_and_normalisation_are_the_course_values_bit_for_bit():
    normalizer = NormalizedEnv(gym.make("ALE/Breakout-v5").env)
    reference = CourseNormalizer()
    for frame in raw_breakout_frames(3000):
        processed = _process_frame42(frame)
        expected = course_process_frame42(frame)
        assert processed.shape == expected.shape == (1, 42, 42) and processed.dtype == expected.dtype
        np.testing.assert_array_equal(processed, expected)
        normalised, expected_normalised = normalizer.observation(processed), reference.observation(expected)
        assert normalised.dtype == expected_normalised.dtype
        np.testing.assert_array_equal(normalised, expected_normalised)
        assert normalizer.state_mean == reference.state_mean and normalizer.state_std == reference.state_std


def test_random_frames_give_the_course_values_bit_for_bit():
    rng = np.random.default_rng(1)
    for _ in range(500):
        frame = rng.integers(0, 256, (210, 160, 3), dtype=np.uint8)
        np.testing.assert_array_equal(_process_frame42(frame), course_process_frame42(frame))


def test_grey_table_holds_the_course_value_of_every_channel_sum():
    from envs import _GREY

    # One pixel per sum R + G + B = 0..765.
    pixels = np.array([[min(s, 255), min(max(s - 255, 0), 255), max(s - 510, 0)] for s in range(766)],
                      dtype=np.uint8)[:, np.newaxis, :]
    expected = pixels.mean(2).astype(np.float32)
    expected *= 1.0 / 255.0
    np.testing.assert_array_equal(_GREY[pixels.sum(2, dtype=np.uint16)], expected)

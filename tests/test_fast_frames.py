"""The fast frame processing (a3c_extras/fast_frames.py), the default, must give bit for bit the values
of the course's code in envs.py, on many frames of the real game and on random ones."""

import gymnasium as gym
import numpy as np

from a3c_extras import fast_frames
from a3c_extras.atari import resolve_env_id
from envs import MyNormalizedEnv, _process_frame42


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
    fast = fast_frames.Normalized(gym.make("ALE/Breakout-v5").env)
    course = MyNormalizedEnv(gym.make("ALE/Breakout-v5").env)
    for frame in raw_breakout_frames(3000):
        processed = fast_frames.process_frame42(frame)
        expected = _process_frame42(frame)
        assert processed.shape == (1, 42, 42) and expected.shape == (42, 42)  # the course adds the axis later
        assert processed.dtype == expected.dtype
        np.testing.assert_array_equal(processed[0], expected)
        normalised, expected_normalised = fast.observation(processed), course.observation(expected)
        assert normalised.dtype == expected_normalised.dtype
        np.testing.assert_array_equal(normalised, expected_normalised)
        assert fast.state_mean == course.state_mean and fast.state_std == course.state_std


def test_random_frames_give_the_course_values_bit_for_bit():
    rng = np.random.default_rng(1)
    for _ in range(500):
        frame = rng.integers(0, 256, (210, 160, 3), dtype=np.uint8)
        np.testing.assert_array_equal(fast_frames.process_frame42(frame)[0], _process_frame42(frame))


def test_grey_table_holds_the_course_value_of_every_channel_sum():
    # One pixel per sum R + G + B = 0..765.
    pixels = np.array([[min(s, 255), min(max(s - 255, 0), 255), max(s - 510, 0)] for s in range(766)], dtype=np.uint8)[
        :, np.newaxis, :
    ]
    expected = pixels.mean(2).astype(np.float32)
    expected *= 1.0 / 255.0
    np.testing.assert_array_equal(fast_frames.GREY[pixels.sum(2, dtype=np.uint16)], expected)

"""The fast frame processing (a3c_extras/fast_frames.py), the default, must give bit for bit the values
of the course's code in envs.py, on many frames of the real game and on random ones; and so for the
opt-in 80x80 frames (--frame-size 80), against the classic path's (a3c_extras/large_frames.py)."""

import cv2
import gymnasium as gym
import numpy as np
import pytest

from a3c_extras import fast_frames, large_frames
from a3c_extras.atari import options, resolve_env_id
from envs import MyNormalizedEnv, _process_frame42, create_atari_env


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


def test_80x80_frames_and_normalisation_are_the_classic_values_bit_for_bit():
    """--frame-size 80: the fast frames equal the classic path's (the course's pipeline without its last
    shrink, a3c_extras/large_frames.py, normalised by the course's MyNormalizedEnv)."""
    fast = fast_frames.Normalized(fast_frames.Rescale(gym.make("ALE/Breakout-v5").env, 80))
    course = MyNormalizedEnv(large_frames.Rescale80x80(gym.make("ALE/Breakout-v5").env))
    assert fast.observation_space.shape == course.observation_space.shape == (1, 80, 80)
    for frame in raw_breakout_frames(1500, seed=2):
        processed = fast_frames.process_frame(frame, 80)
        expected = large_frames.process_frame80(frame)
        assert processed.shape == (1, 80, 80) and expected.shape == (80, 80)
        assert processed.dtype == expected.dtype
        np.testing.assert_array_equal(processed[0], expected)
        normalised, expected_normalised = fast.observation(processed), course.observation(expected)
        assert normalised.shape == expected_normalised.shape == (1, 80, 80)
        np.testing.assert_array_equal(normalised, expected_normalised)
        assert fast.state_mean == course.state_mean and fast.state_std == course.state_std


def test_80x80_frames_are_the_course_s_resize_without_its_last_shrink():
    """On random frames: the fast and classic 80x80 frames agree, both are rows 34..194 and columns 0..160
    resized to 80x80 and averaged to grey over 255, and size 42 is still the course's frame."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        frame = rng.integers(0, 256, (210, 160, 3), dtype=np.uint8)
        np.testing.assert_array_equal(fast_frames.process_frame(frame, 80)[0], large_frames.process_frame80(frame))
        resized = cv2.resize(frame[34:194, :160], (80, 80))
        expected = resized.mean(2).astype(np.float32) * np.float32(1.0 / 255.0)
        np.testing.assert_array_equal(large_frames.process_frame80(frame), expected)
        np.testing.assert_array_equal(fast_frames.process_frame(frame, 42)[0], _process_frame42(frame))


def test_create_atari_env_makes_80x80_frames_the_same_on_both_rollouts():
    """--frame-size 80 through create_atari_env: the fast path (the default) and --rollout classic give
    the same observations, step after step."""
    envs = {
        rollout: create_atari_env("BreakoutDeterministic-v4", link=options(frame_size=80, rollout=rollout))
        for rollout in ("fast", "classic")
    }
    observations = {rollout: [env.reset(seed=5)[0]] for rollout, env in envs.items()}
    rng = np.random.default_rng(5)
    for _ in range(200):
        action = int(rng.integers(4))
        for rollout, env in envs.items():
            observations[rollout].append(env.step(action)[0])
    assert observations["fast"][0].shape == (1, 80, 80)
    np.testing.assert_array_equal(np.stack(observations["fast"]), np.stack(observations["classic"]))
    assert np.stack(observations["fast"]).std() > 0.1  # real, normalised frames


def test_an_unknown_frame_size_is_refused():
    with pytest.raises(ValueError, match="42x42"):
        fast_frames.process_frame(np.zeros((210, 160, 3), np.uint8), 64)

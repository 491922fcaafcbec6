import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from a3c_extras.atari import UnknownEnvError, options, resolve_env_id
from conftest import ROOT
from envs import MyNormalizedEnv, _process_frame42, create_atari_env
from helpers import own_lines


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "course"])
def test_processed_frame_shape_dtype_and_range(fast):
    env = create_atari_env("ALE/Breakout-v5", link=options(rollout="fast" if fast else "classic"))
    raw_env = env.env  # before normalisation
    obs, _ = raw_env.reset(seed=0)
    assert obs.shape == ((1, 42, 42) if fast else (42, 42)) and obs.dtype == np.float32  # the course: (42, 42)
    assert env.reset(seed=0)[0].shape == (1, 42, 42)
    assert 0.0 <= obs.min() and obs.max() <= 1.0 and obs.max() > 0


def test_frame_processing_crops_resizes_and_averages_colours():
    frame = np.zeros((210, 160, 3), dtype=np.uint8)
    frame[:34] = 255  # the score bar: cropped away
    frame[34:194, :80, 0] = 90  # left half: red 90, so grey 30
    out = _process_frame42(frame)
    assert out.shape == (42, 42)  # the course's MyNormalizedEnv adds the channel axis
    np.testing.assert_allclose(out[:, :20], 30 / 255, atol=1e-6)
    np.testing.assert_allclose(out[:, 22:], 0.0)


def test_normalisation_running_statistics():
    env = MyNormalizedEnv(gym.make("ALE/Breakout-v5").env)
    rng = np.random.default_rng(0)
    mean = std = 0.0
    for t in range(1, 6):
        frame = rng.random((42, 42), dtype=np.float32) * t
        mean = 0.9999 * mean + 0.0001 * frame.mean()
        std = 0.9999 * std + 0.0001 * frame.std()
        correction = 1 - 0.9999**t
        expected = ((frame - mean / correction) / (std / correction + 1e-8))[np.newaxis]
        np.testing.assert_allclose(env.observation(frame), expected, rtol=1e-5, atol=1e-5)
    assert env.num_steps == 5


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "course"])
def test_normalisation_uses_the_bias_corrected_running_mean_and_std_of_the_frames_seen(fast):
    """Frame t becomes (frame - M) / (S + 1e-8), where M and S are averages of the means and standard deviations
    of frames 1..t with weights alpha^(t-k), alpha = 0.9999: computed here directly, on frames of the game."""
    env = create_atari_env("BreakoutDeterministic-v4", link=options(rollout="fast" if fast else "classic"))
    game = env.env  # the 42x42 frames before normalisation
    frame, _ = game.reset(seed=0)
    rng = np.random.default_rng(0)
    means, stds = [], []
    for t in range(1, 201):
        means.append(float(np.mean(frame, dtype=np.float64)))
        stds.append(float(np.std(frame, dtype=np.float64)))
        weights = 0.9999 ** np.arange(t - 1, -1, -1)
        mean, std = np.average(means, weights=weights), np.average(stds, weights=weights)
        normalised = env.observation(frame)
        expected = ((frame - mean) / (std + 1e-8)).reshape(1, 42, 42)  # the course's frame is 42x42 until here
        np.testing.assert_allclose(normalised, expected, rtol=1e-4, atol=1e-4)
        if t == 1:  # the first frame alone: exactly zero mean and unit standard deviation
            assert abs(normalised.mean()) < 1e-5 and normalised.std() == pytest.approx(1.0, abs=1e-5)
        frame, _, terminated, truncated, _ = game.step(int(rng.integers(env.action_space.n)))
        if terminated or truncated:
            frame, _ = game.reset()
    assert env.num_steps == 200


@pytest.mark.parametrize(
    "env_id, registered, sticky, frameskip",
    [
        ("ALE/Breakout-v5", "ALE/Breakout-v5", 0.25, 4),
        ("Breakout-v0", "Breakout-v0", 0.25, (2, 5)),
        ("Breakout-v4", "Breakout-v4", 0.0, (2, 5)),
        ("BreakoutNoFrameskip-v4", "BreakoutNoFrameskip-v4", 0.0, 1),
        ("BreakoutDeterministic-v4", "ALE/Breakout-v5", 0.0, 4),
        ("PongDeterministic-v4", "ALE/Pong-v5", 0.0, 4),
    ],
)
def test_accepted_ids(env_id, registered, sticky, frameskip):
    env = create_atari_env(env_id)
    assert env.spec.id == registered
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(sticky)
    assert env.unwrapped._frameskip == frameskip
    obs, _ = env.reset(seed=1)
    assert obs.shape == (1, 42, 42)
    assert env.action_space.n == (6 if "Pong" in env_id else 4)


def test_unknown_id_names_the_closest():
    with pytest.raises(UnknownEnvError, match="Breakout"):
        resolve_env_id("Breakot-v5")


def test_unknown_id_on_the_command_line_exits_2_with_one_line():
    out = subprocess.run(
        [sys.executable, "main.py", "--env-name", "BreakoutDetermnistic-v4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    lines = own_lines(out.stderr)
    assert len(lines) == 1, out.stderr
    assert "BreakoutDeterministic-v4" in lines[0]
    assert "Traceback" not in out.stderr


def test_life_loss_ends_training_episodes_but_not_the_game():
    env = create_atari_env("BreakoutDeterministic-v4", link=options(life_loss=True, fire_reset=True))
    env.reset(seed=0)
    ends, game_overs = 0, 0
    for _ in range(3000):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        if terminated or truncated:
            ends += 1
            game_overs += info["game_over"]
            if info["game_over"]:
                break
            env.reset()
    assert game_overs == 1
    assert ends == 5  # Breakout has five lives

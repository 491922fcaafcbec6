"""The evaluation's figures: the confidence interval of the mean, and the cap every episode ends at."""

import pytest

from a3c_extras.atari import MAX_FRAMES
from a3c_extras.evaluation import confidence_interval, t_quantile_975
from envs import create_atari_env


def test_interval_of_a_hand_computed_sample():
    # mean 3, sample std 1.5811, t(0.975, 4 df) = 2.776: 3 -+ 2.776 * 1.5811 / sqrt(5) = 3 -+ 1.963
    low, high = confidence_interval([1, 2, 3, 4, 5])
    assert low == pytest.approx(1.0370, abs=1e-3) and high == pytest.approx(4.9630, abs=1e-3)


@pytest.mark.parametrize("df, exact", [(1, 12.7062), (9, 2.2622), (30, 2.0423), (31, 2.0395), (49, 2.0096),
                                       (60, 2.0003), (120, 1.9799), (1000, 1.9623)])
def test_t_quantile_against_published_values(df, exact):
    assert t_quantile_975(df) == pytest.approx(exact, abs=2e-3)


def test_one_episode_gives_no_interval():
    low, high = confidence_interval([308.0])
    assert low != low and high != high  # nan: one game says nothing of the spread


@pytest.mark.parametrize("env_id", ["BreakoutDeterministic-v4", "ALE/Breakout-v5"])
def test_an_agent_that_never_serves_ends_its_episode_at_108000_frames(env_id):
    """Breakout waits for FIRE forever: without the cap, an evaluation of such an agent never ends."""
    env = create_atari_env(env_id)
    env.reset(seed=0)
    steps, done = 0, False
    while not done and steps < 40_000:
        _, _, terminated, truncated, _ = env.step(0)  # NOOP
        steps, done = steps + 1, terminated or truncated
    assert truncated and not terminated
    assert env.unwrapped.ale.getEpisodeFrameNumber() == MAX_FRAMES == 108_000
    assert steps == 27_000  # 4 frames per agent step

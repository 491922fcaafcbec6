"""The evaluation's figures: the confidence interval of the mean, the cap every episode ends at, and
how the test process chooses best.pt."""

from types import SimpleNamespace

import pytest
import torch
from gymnasium.spaces import Discrete

from a3c_extras.atari import MAX_FRAMES
from a3c_extras.checkpoints import load_checkpoint
from a3c_extras.evaluation import confidence_interval, t_quantile_975
from a3c_extras.links import SharedCounts, WorkerLink
from envs import create_atari_env
from model import ActorCritic


def test_interval_of_a_hand_computed_sample():
    # mean 3, sample std 1.5811, t(0.975, 4 df) = 2.776: 3 -+ 2.776 * 1.5811 / sqrt(5) = 3 -+ 1.963
    low, high = confidence_interval([1, 2, 3, 4, 5])
    assert low == pytest.approx(1.0370, abs=1e-3) and high == pytest.approx(4.9630, abs=1e-3)


@pytest.mark.parametrize(
    "df, exact",
    [(1, 12.7062), (9, 2.2622), (30, 2.0423), (31, 2.0395), (49, 2.0096), (60, 2.0003), (120, 1.9799), (1000, 1.9623)],
)
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


def _evaluations(tmp_path, rewards, window):
    """The test process's link after one evaluation episode per reward, each played by other weights
    (model k has every bias at k); returns best.pt as saved, or None."""
    shared = SharedCounts(torch.multiprocessing, 1)
    link = WorkerLink.of_run(shared, 0, None, best_path=str(tmp_path / "best.pt"))
    params = SimpleNamespace(best_window=window, run_dir=str(tmp_path), env_name="BreakoutDeterministic-v4")
    for k, reward in enumerate(rewards):
        model = ActorCritic(1, Discrete(4))
        for name, tensor in model.named_parameters():
            if name.endswith("bias"):
                tensor.data.fill_(k)
        link.evaluation(0, 1000 * k, reward, 100, model, params)
    return load_checkpoint(tmp_path / "best.pt") if (tmp_path / "best.pt").exists() else None


def test_best_pt_is_the_best_mean_of_recent_evaluations_not_one_lucky_episode(tmp_path):
    # One lucky replay (325), then a policy that improves steadily: the mean of 5 picks the steady one.
    rewards = [325, 0, 0, 0, 0, 100, 110, 120, 130, 140]
    best = _evaluations(tmp_path, rewards, window=5)
    assert best["best_reward"] == pytest.approx(120.0)  # (100 + 110 + 120 + 130 + 140) / 5
    assert best["counter"] == 9000 and best["model"]["actor_linear.bias"][0].item() == 9  # the latest weights
    (tmp_path / "single").mkdir()
    single = _evaluations(tmp_path / "single", rewards, window=1)  # the best single episode, as before
    assert single["best_reward"] == 325 and single["model"]["actor_linear.bias"][0].item() == 0


def test_no_best_pt_before_the_window_is_full(tmp_path):
    assert _evaluations(tmp_path, [300, 310, 320, 330], window=5) is None


def test_the_test_process_plays_whole_games_when_training_ends_episodes_at_a_lost_life():
    """--life-loss is a training departure: the test process's episode is the whole game (five lives)."""
    from a3c_extras.supervision import connect

    params = SimpleNamespace(env_name="BreakoutDeterministic-v4", life_loss=True, fire_reset=True)
    for name, lives_per_episode in (("worker 0", 1), ("test", 5)):
        _, link = connect(params, WorkerLink(name))
        env = create_atari_env(params.env_name, link=link)
        env.reset(seed=0)
        lives_at_start, done = env.unwrapped.ale.lives(), False
        while not done:
            _, _, terminated, truncated, _ = env.step(0)  # NOOP: FIRE serves after each lost life
            done = terminated or truncated
        assert lives_at_start - env.unwrapped.ale.lives() == lives_per_episode, name

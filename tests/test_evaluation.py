"""The evaluation's figures: the confidence interval of the mean, the cap every episode ends at, the
stuck-agent guard (a3c_extras/stall.py) in the test process and the evaluation command, and how the test
process chooses best.pt."""

import json
import re
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from gymnasium.spaces import Discrete

import test as test_process  # the project's test.py, not Python's own test package
from a3c_extras import atari, evaluation, fast_frames, frame_stats
from a3c_extras.atari import MAX_FRAMES
from a3c_extras.checkpoints import checkpoint, load_checkpoint, save_checkpoint
from a3c_extras.evaluation import confidence_interval, t_quantile_975
from a3c_extras.links import SharedCounts, WorkerLink
from a3c_extras.stall import STALL_STEPS, StallGuard
from envs import create_atari_env
from helpers import params_from, wait_until
from model import ActorCritic
from scripted import run_train


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


@pytest.mark.parametrize("env_id", ["BreakoutDeterministic-v4"])  # a legacy id: made as ALE/Breakout-v5 is, its cap too
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


def one_action(action: int, num_actions: int) -> ActorCritic:
    """A model whose greedy action is always `action`: an agent that repeats one action."""
    model = ActorCritic(1, Discrete(num_actions))
    model.actor_linear.weight.data.zero_()
    model.actor_linear.bias.data.copy_(torch.eye(num_actions)[action])
    return model


def first_episode_of_the_test_process(env_name, model, capfd, *flags):
    """test.py's test() plays `model` until it reports its first episode; that event and the line printed.
    `flags`: more of main.py's flags (the videos: --run-dir and --record-every)."""
    args = params_from(["--env-name", env_name, "--eval-interval", "0", "--record-every", "0", *flags])
    link = WorkerLink("test")
    thread = threading.Thread(target=test_process.test, args=(0, args, model), kwargs={"link": link})
    thread.start()
    wait_until(lambda: link.events or not thread.is_alive(), 120, every=0.05)
    link.request_stop()
    thread.join(timeout=60)
    lines = [line for line in capfd.readouterr().out.splitlines() if line.startswith("Time ")]
    return link.events[0], lines[0]


@pytest.mark.parametrize("action", range(6))  # NOOP, FIRE, RIGHT, LEFT, RIGHTFIRE, LEFTFIRE
def test_pong_played_with_one_repeated_action_is_never_cut_short(action):
    """Pong serves by itself: whatever one action the agent repeats, points come and the game is played
    out (21-0 in a few hundred steps), where the guard of 100 equal actions ended it at -2 after 100 steps."""
    env = create_atari_env("ALE/Pong-v5")
    env.reset(seed=0)
    guard = StallGuard(env)
    assert guard.fire  # Pong's actions have FIRE: the guard watches it
    reward_sum, steps, done = 0.0, 0, False
    while not done:
        _, reward, terminated, truncated, _ = env.step(action)
        reward_sum, steps, done = reward_sum + reward, steps + 1, terminated or truncated
        assert not guard.check(action, reward, done), f"cut short after {steps} steps"
    assert terminated and reward_sum == -21 and 300 < steps < STALL_STEPS


def test_the_test_process_plays_a_pong_game_out_and_reports_it_finished(capfd):
    event, line = first_episode_of_the_test_process("PongDeterministic-v4", one_action(0, 6), capfd)
    assert not event.cut_short and event.reward == -21 and event.length > 300, event  # the whole game, not 100 steps
    assert line.startswith("Time ") and "cut short" not in line and "episode reward -21.0" in line, line


def test_the_test_process_cuts_a_breakout_episode_that_never_serves_and_says_so(capfd):
    event, line = first_episode_of_the_test_process("BreakoutDeterministic-v4", one_action(0, 4), capfd)
    assert (event.cut_short, event.reward, event.length) == (True, 0, STALL_STEPS), event  # not a finished game
    assert line.endswith(f"cut short: no FIRE to serve in {STALL_STEPS:,} agent steps"), line


def test_the_video_of_an_episode_cut_short_says_so_in_its_name(capfd, tmp_path):
    flags = ["--run-dir", str(tmp_path), "--record-every", "1"]
    event, _ = first_episode_of_the_test_process("BreakoutDeterministic-v4", one_action(0, 4), capfd, *flags)
    assert event.cut_short, event
    names = [path.name for path in (tmp_path / "videos").iterdir()]
    assert names == ["eval-0000-steps0-reward0-cut-short.mp4"], names  # not a finished game's name


def test_the_guard_counts_only_while_the_game_waits_for_a_serve():
    """Breakout with a guard of 10 steps: 9 steps without FIRE pass, FIRE serves, the ball in play for more
    than 10 steps without a point is play (not counted), and after the lost life the 10th step without FIRE
    cuts the episode."""
    env = create_atari_env("BreakoutDeterministic-v4")
    env.reset(seed=0)
    guard = StallGuard(env, steps=10)
    for _ in range(9):
        _, reward, *_ = env.step(0)
        assert not guard.check(0, reward)
    _, reward, *_ = env.step(1)  # FIRE: the ball is served
    assert not guard.check(1, reward)
    in_play = 0
    while env.unwrapped.ale.lives() == 5:  # NOOP until the ball is missed
        _, reward, *_ = env.step(0)
        assert not guard.check(0, reward)
        in_play += 1
    assert in_play > 10
    waiting = 1  # the step that lost the life was the first of the wait
    while True:
        _, reward, *_ = env.step(0)
        waiting += 1
        if guard.check(0, reward):
            break
    assert waiting == 10 and env.unwrapped.ale.lives() == 4


def test_the_evaluation_command_reports_episodes_cut_short(tmp_path, capsys):
    """An agent that never serves: each episode says it was cut short, the summary counts them, and they
    count in the mean at their score."""
    args = params_from(["--env-name", "BreakoutDeterministic-v4", "--run-dir", str(tmp_path)])
    save_checkpoint(tmp_path / "noop.pt", checkpoint(one_action(0, 4), None, 0, 0, None, args))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread, as the test process plays: two on busy cores make each step crawl
    try:
        argv = ["--checkpoint", str(tmp_path / "noop.pt"), "--episodes", "2", "--record", str(tmp_path / "eval")]
        assert evaluation.main(ActorCritic, create_atari_env, argv) == 0
    finally:
        torch.set_num_threads(threads)
    lines = capsys.readouterr().out.splitlines()
    assert all(f"episode length {STALL_STEPS}, " in line and "cut short" in line for line in lines[:2]), lines
    assert lines[2].startswith("Summary: 2 episodes (1 different), mean 0.00")  # the same game twice
    assert lines[2].endswith(", 2 cut short (counted at their score)"), lines[2]
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["cut_short"] == [True, True] and summary["lengths"] == [STALL_STEPS, STALL_STEPS]
    assert summary["different_games"] == 1


def _evaluations(tmp_path, rewards, window, cut=()):
    """The test process's link after one evaluation episode per reward, each played by other weights
    (model k has every bias at k), those numbered in `cut` cut short; returns best.pt as saved, or None."""
    shared = SharedCounts(torch.multiprocessing, 1)
    link = WorkerLink(counts=shared, best_path=str(tmp_path / "best.pt"))
    params = SimpleNamespace(best_window=window, run_dir=str(tmp_path), env_name="BreakoutDeterministic-v4")
    for k, reward in enumerate(rewards):
        model = ActorCritic(1, Discrete(4))
        for name, tensor in model.named_parameters():
            if name.endswith("bias"):
                tensor.data.fill_(k)
        link.evaluation(0, 1000 * k, reward, 100, model, params, k in cut)
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


def test_episodes_cut_short_do_not_count_in_best_pt_s_mean(tmp_path):
    # Five finished games and two cut short (a stalled agent's 0 and its 500): only the finished games count.
    best = _evaluations(tmp_path, [100, 0, 110, 120, 500, 130, 140], window=5, cut={1, 4})
    assert best["best_reward"] == pytest.approx(120.0) and best["counter"] == 6000


def test_the_test_process_plays_whole_games_when_training_ends_episodes_at_a_lost_life():
    """--life-loss is a training departure: the test process's episode is the whole game (five lives)."""
    from a3c_extras.links import connect

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


def test_the_evaluation_command_rebuilds_the_network_of_a_checkpoint_s_sizes(tmp_path, capsys):
    """A checkpoint of an 80x80 / LSTM 512 run plays with that network on 80x80 frames (a 42x42 frame or
    a 256 LSTM would not fit its weights)."""
    args = params_from(["--frame-size", "80", "--lstm-size", "512", "--run-dir", str(tmp_path)])
    model = ActorCritic(1, Discrete(4), frame_size=80, lstm_size=512)
    save_checkpoint(tmp_path / "large.pt", checkpoint(model, None, 0, 0, None, args))
    argv = ["--checkpoint", str(tmp_path / "large.pt"), "--episodes", "1", "--max-episode-length", "30"]
    assert evaluation.main(ActorCritic, create_atari_env, argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.match(r"Episode 1/1: episode reward [\d.]+, episode length 30, ", lines[0]), lines


def test_a_checkpoint_whose_weights_are_not_its_arguments_network_is_one_line_and_status_2(tmp_path, capsys):
    args = params_from(["--frame-size", "80", "--run-dir", str(tmp_path)])
    save_checkpoint(tmp_path / "odd.pt", checkpoint(ActorCritic(1, Discrete(4)), None, 0, 0, None, args))
    with pytest.raises(SystemExit) as exit_:
        evaluation.main(ActorCritic, create_atari_env, ["--checkpoint", str(tmp_path / "odd.pt")])
    lines = [line for line in capsys.readouterr().err.splitlines() if "A.L.E" not in line and "Stella" not in line]
    assert exit_.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("test.py: error: ") and "80x80 frames" in lines[0] and "lstm.weight_ih" in lines[0]


STATS = {"mean": 0.25, "std": 0.125, "frames": 12_345, "source": "worker 0, game 0"}


@pytest.mark.parametrize("rollout", ["fast", "classic"])
def test_frozen_stats_normalise_every_frame_with_the_same_values_across_episodes(rollout):
    """Frozen: (x - mean) / (std + 1e-8) with the checkpoint's values, frame after frame and episode after
    episode, where x is the course's frame (here read from the same game without a normaliser); in place
    of either rollout's normaliser."""
    frozen = frame_stats.freeze(
        create_atari_env("BreakoutDeterministic-v4", link=atari.options(rollout=rollout)), STATS
    )
    raw = fast_frames.Rescale(atari.make("BreakoutDeterministic-v4"))
    rng = np.random.default_rng(0)
    mean, std = np.float32(STATS["mean"]), np.float32(STATS["std"])
    for episode in range(2):
        pairs = [(frozen.reset(seed=episode)[0], raw.reset(seed=episode)[0])]
        for _ in range(60):
            action = int(rng.integers(4))
            pairs.append((frozen.step(action)[0], raw.step(action)[0]))
        for observation, x in pairs:
            assert observation.shape == (1, 42, 42) and observation.dtype == np.float32
            np.testing.assert_array_equal(observation, (x - mean) / (std + np.float32(1e-8)))
    assert len({float(x.std()) for _, x in pairs}) > 1  # the frames changed, the statistics did not


def test_the_evaluation_command_plays_frozen_and_says_so(tmp_path, capsys):
    args = params_from(["--run-dir", str(tmp_path)])
    save_checkpoint(
        tmp_path / "c.pt", checkpoint(ActorCritic(1, Discrete(4)), None, 0, 0, None, args, frame_stats=STATS)
    )
    argv = ["--checkpoint", str(tmp_path / "c.pt"), "--episodes", "2", "--max-episode-length", "20"]
    assert (
        evaluation.main(ActorCritic, create_atari_env, [*argv, "--record", str(tmp_path / "frozen"), "--frozen-stats"])
        == 0
    )
    assert evaluation.main(ActorCritic, create_atari_env, [*argv, "--record", str(tmp_path / "running")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0]
        == "Frame statistics frozen at the checkpoint's: mean 0.25, std 0.125 (worker 0, game 0, after 12,345 frames)"
    )
    assert lines[3].startswith("Summary: 2 episodes") and lines[3].endswith("; frame statistics frozen"), lines
    assert lines[6].startswith("Summary: 2 episodes") and "frozen" not in " ".join(lines[4:]), lines  # the default
    frozen = json.loads((tmp_path / "frozen" / "summary.json").read_text())
    running = json.loads((tmp_path / "running" / "summary.json").read_text())
    assert frozen["normalisation"] == "frozen" and frozen["frame_stats"] == STATS
    assert running["normalisation"] == "running" and "frame_stats" not in running


def test_frozen_stats_of_a_checkpoint_without_them_is_one_line_and_status_2(tmp_path, capsys):
    args = params_from(["--run-dir", str(tmp_path)])
    save_checkpoint(tmp_path / "old.pt", checkpoint(ActorCritic(1, Discrete(4)), None, 0, 0, None, args))
    with pytest.raises(SystemExit) as exit_:
        evaluation.main(ActorCritic, create_atari_env, ["--checkpoint", str(tmp_path / "old.pt"), "--frozen-stats"])
    lines = [line for line in capsys.readouterr().err.splitlines() if "A.L.E" not in line and "Stella" not in line]
    assert exit_.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("test.py: error: ") and "holds no frame statistics" in lines[0], lines


@pytest.mark.parametrize("rollout", ["fast", "classic"])
def test_worker_0_publishes_its_first_game_s_statistics_for_the_checkpoints(tmp_path, rollout):
    """train.py's worker 0, on either rollout, writes what its normaliser applies into the run's shared memory; a
    checkpoint saved with them carries them; another worker writes none."""
    args = params_from(["--rollout", rollout, "--run-dir", str(tmp_path)])
    counts = SharedCounts(torch.multiprocessing, 2)
    for rank in (1, 0):
        env = create_atari_env(args.env_name, link=SimpleNamespace(params=args, make_env=None))
        run_train(args, rollout, env, updates=2, model=ActorCritic(1, Discrete(4)), rank=rank, counts=counts)
        published = frame_stats.latest(counts.frames)
        if rank == 1:
            assert published is None
    assert published == frame_stats.of_normaliser(env) and published["frames"] == env.num_steps > 40
    assert published["source"] == "worker 0, game 0" and published["std"] > 0
    save_checkpoint(
        tmp_path / "c.pt", checkpoint(ActorCritic(1, Discrete(4)), None, 0, 0, None, args, frame_stats=published)
    )
    assert frame_stats.of_checkpoint(load_checkpoint(tmp_path / "c.pt"), "c.pt") == published

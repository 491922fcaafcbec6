"""The evaluation command: play a saved agent for some episodes, print each and a summary, optionally
record them. test.py runs it with the course's model and environment:

    python test.py --checkpoint runs/<run>/best.pt --episodes 10 --noop-max 30 --seed 1 --record videos/

By default the frames are normalised as in training and in the test process, with running statistics
carried across the episodes; --frozen-stats plays with the statistics training reached, frozen
(a3c_extras/frame_stats.py), and says so in its summary.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from a3c_extras import frame_stats, sizes
from a3c_extras.atari import UnknownEnvError, options, resolve_env_id
from a3c_extras.checkpoints import CheckpointError, load_checkpoint
from a3c_extras.cli import fail, number, one_line_errors
from a3c_extras.stall import StallGuard, cut_short_note
from a3c_extras.videos import add_step, recorder_for


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="test.py", description="Evaluate a saved A3C agent, optionally recording videos."
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt, best.pt or a run directory")
    parser.add_argument("--env-name", default=None, help="environment id (default: the checkpoint's)")
    parser.add_argument("--episodes", type=number(int, low=1), default=10)
    parser.add_argument("--record", metavar="DIR", default=None, help="write one MP4 per episode here")
    parser.add_argument(
        "--overlay", action="store_true", help="show the agent's input, policy and value beside the game"
    )
    parser.add_argument("--sample", action="store_true", help="sample actions from the policy instead of argmax")
    parser.add_argument(
        "--noop-max", type=number(int, low=0), default=0, help="up to K random no-ops at each start (papers: 30)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-episode-length", type=number(int, low=1), default=None)
    parser.add_argument(
        "--frozen-stats",
        action="store_true",
        help="normalise the frames with the statistics training reached, saved in the checkpoint, frozen for "
        "every episode, instead of the course's running normalisation carried across the episodes (the default)",
    )
    return one_line_errors(parser).parse_args(argv)


# Student's t, two-sided 95%: its quantile t(0.975) for 1 to 30 degrees of freedom (standard tables).
T_975 = [
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
]


def t_quantile_975(df: int) -> float:
    """t(0.975) with df degrees of freedom: the table up to 30, then the Cornish-Fisher expansion around
    the normal's 1.95996 (within 1e-4 of the exact value from 30 on)."""
    if df <= len(T_975):
        return T_975[df - 1]
    z = 1.959964
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def confidence_interval(scores) -> tuple[float, float]:
    """The 95% confidence interval of the mean score (Student's t, the sample standard deviation);
    one episode gives no interval: (mean, mean) is returned as (nan, nan)."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) < 2:
        return float("nan"), float("nan")
    half = t_quantile_975(len(scores) - 1) * scores.std(ddof=1) / np.sqrt(len(scores))
    return float(scores.mean() - half), float(scores.mean() + half)


def play_episode(
    env,
    model,
    max_episode_length: int,
    *,
    sample: bool = False,
    noop_max: int = 0,
    rng=None,
    on_step=None,
    stop_event=None,
):
    """One episode with the model's policy, greedy (argmax, as the test process plays) or sampled.
    Returns (reward, length, cut_short), cut_short True when the stuck-agent guard ended a stalled episode
    (a3c_extras/stall.py, as in the test process), or None if stop_event was set meanwhile.
    `on_step(observation, probs, value)` sees each decision."""
    state, _ = env.reset()
    hx = cx = torch.zeros(1, model.lstm.hidden_size)
    reward_sum, length, done, cut_short = 0.0, 0, False, False
    # Up to noop_max random no-ops first: the evaluation protocol of the DQN and A3C papers.
    for _ in range(rng.integers(0, noop_max + 1) if noop_max else 0):
        state, reward, terminated, truncated, _ = env.step(0)
        reward_sum, length = reward_sum + reward, length + 1
        if terminated or truncated:
            state, _ = env.reset()
    guard = StallGuard(env)
    while not done:
        if stop_event is not None and stop_event.is_set():
            return None
        with torch.no_grad():
            value, logit, (hx, cx) = model((torch.from_numpy(state).unsqueeze(0), (hx, cx)))
        prob = F.softmax(logit, dim=-1)
        action = prob.multinomial(num_samples=1).item() if sample else prob.argmax(1).item()
        if on_step is not None:
            on_step(state, prob[0].numpy(), value.item())
        state, reward, terminated, truncated, _ = env.step(action)
        reward_sum, length = reward_sum + reward, length + 1
        done = terminated or truncated or length >= max_episode_length
        cut_short = guard.check(action, reward, done)
        done = done or cut_short
    return reward_sum, length, cut_short


def evaluate(args, model_class, make_env) -> dict:
    """Play args.episodes episodes with a checkpoint's weights; print each and a summary."""
    data = load_checkpoint(args.checkpoint)
    saved = data["args"]
    env_name = args.env_name or saved["env_name"]
    resolve_env_id(env_name)
    network = sizes.of(saved)  # the checkpoint's network: its frames and its LSTM
    frozen = frame_stats.of_checkpoint(data, args.checkpoint) if getattr(args, "frozen_stats", False) else None
    link = options(
        render=bool(args.record), fire_reset=saved.get("fire_reset", False), frame_size=network["frame_size"]
    )
    env = make_env(env_name, link=link)
    if frozen is not None:  # the running normaliser replaced by one that keeps training's statistics
        env = frame_stats.freeze(env, frozen)
        print(
            f"Frame statistics frozen at the checkpoint's: mean {frozen['mean']:.6g}, std {frozen['std']:.6g} "
            f"({frozen.get('source', 'training')}, after {frozen['frames']:,} frames)",
            flush=True,
        )
    data = load_checkpoint(args.checkpoint, num_actions=env.action_space.n)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # one game, batches of one: more threads only wait on each other (or a busy core)
    env.reset(seed=args.seed)
    env.action_space.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = model_class(env.observation_space.shape[0], env.action_space, **network)
    mismatch = sizes.weights_mismatch(model, data["model"])
    if mismatch:
        raise CheckpointError(
            f"{args.checkpoint} does not hold the network its arguments describe "
            f"({sizes.describe(network)}): {mismatch}"
        )
    model.load_state_dict(data["model"])
    model.eval()
    max_length = args.max_episode_length or saved.get("max_episode_length", 1_000_000)
    record_dir = Path(args.record) if args.record else None
    if record_dir:
        record_dir.mkdir(parents=True, exist_ok=True)

    start_time, rewards, lengths, cut = time.time(), [], [], []
    for episode in range(args.episodes):
        recorder = recorder_for(record_dir / f"episode-{episode:03d}.mp4", env, args.overlay) if record_dir else None
        on_step = (lambda obs, probs, value, r=recorder: add_step(r, env, obs, probs, value)) if recorder else None
        reward, length, cut_short = play_episode(
            env, model, max_length, sample=args.sample, noop_max=args.noop_max, rng=rng, on_step=on_step
        )
        if recorder is not None:
            recorder.close()
        rewards.append(reward)
        lengths.append(length)
        cut.append(cut_short)
        print(
            f"Episode {episode + 1}/{args.episodes}: episode reward {reward}, episode length {length}, "
            f"{time.time() - start_time:.0f} s" + (cut_short_note() if cut_short else ""),
            flush=True,
        )

    summary = {
        "checkpoint": str(args.checkpoint),
        "env_name": env_name,
        "episodes": len(rewards),
        "mean": float(np.mean(rewards)),
        "std": float(np.std(rewards)),
        "min": float(np.min(rewards)),
        "max": float(np.max(rewards)),
        "ci95": confidence_interval(rewards),
        "rewards": rewards,
        "lengths": lengths,
        # Greedy play of a deterministic game can repeat one game: no-ops change the start, not Breakout's serve.
        "different_games": len(set(zip(rewards, lengths))),  # at least this many, told apart by score and length
        "cut_short": cut,  # per episode: ended by the stuck-agent guard (counted in the mean at its score)
        "policy": "sample" if args.sample else "greedy",
        "noop_max": args.noop_max,
        "seed": args.seed,
        "total_steps_trained": data.get("counter", 0),
        "normalisation": "frozen" if frozen is not None else "running",  # running: the course's, the default
    }
    if frozen is not None:
        summary["frame_stats"] = frozen
    low, high = summary["ci95"]
    interval = f" (95% CI {low:.1f} to {high:.1f})" if len(rewards) > 1 else ""
    print(
        f"Summary: {summary['episodes']} episodes ({summary['different_games']} different), "
        f"mean {summary['mean']:.2f}{interval}, std {summary['std']:.2f}, "
        f"min {summary['min']:g}, max {summary['max']:g}"
        + (f", {sum(cut)} cut short (counted at their score)" if any(cut) else "")
        + ("; frame statistics frozen" if frozen is not None else ""),
        flush=True,
    )
    if record_dir:
        (record_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(model_class, make_env, argv=None) -> int:
    args = parse_args(argv)
    try:
        evaluate(args, model_class, make_env)
    except (CheckpointError, UnknownEnvError) as error:
        fail(f"test.py: error: {error}")
    except KeyboardInterrupt:
        return 130
    return 0

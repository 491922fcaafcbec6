"""The evaluation process of A3C: plays the shared model greedily and never updates its weights.

During training main.py runs `test` beside the workers. As a command it evaluates a saved agent:
    python test.py --checkpoint runs/<run>/best.pt --episodes 10 --noop-max 30 --record videos/
"""

import argparse
import json
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from checkpoint import save_checkpoint
from envs import create_atari_env
from model import ActorCritic


def play_episode(env, model, max_episode_length: int, *, sample: bool = False, noop_max: int = 0,
                 rng=None, on_step=None, stop_event=None):
    """One episode with the model's policy: argmax (greedy) or sampled. Returns (reward, length), or
    None if stop_event was set meanwhile. `on_step(observation, probs, value)` sees each decision."""
    state, _ = env.reset()
    hx, cx = torch.zeros(1, 256), torch.zeros(1, 256)
    reward_sum, length, done = 0.0, 0, False
    # Up to noop_max random no-ops first: the evaluation protocol of the DQN and A3C papers.
    for _ in range(rng.integers(0, noop_max + 1) if noop_max else 0):
        state, reward, terminated, truncated, _ = env.step(0)
        reward_sum, length = reward_sum + reward, length + 1
        if terminated or truncated:
            state, _ = env.reset()
    actions = deque(maxlen=100)
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
        # A stuck agent (e.g. one that never presses FIRE in Breakout) would never end the episode.
        actions.append(action)
        stuck = actions.count(actions[0]) == actions.maxlen
        done = terminated or truncated or length >= max_episode_length or stuck
    return reward_sum, length


def course_line(start_time: float, num_steps: int, fps: float, reward: float, length: int) -> str:
    elapsed = time.strftime("%Hh %Mm %Ss", time.gmtime(time.time() - start_time))
    return f"Time {elapsed}, num steps {num_steps}, FPS {fps:.0f}, episode reward {reward}, episode length {length}"


def recorder_for(path, env, overlay: bool):
    """An MP4 recorder of the real game screen at the game's speed (one frame per agent step)."""
    from video import EpisodeRecorder

    frameskip = env.unwrapped._frameskip
    mean_skip = sum(frameskip) / 2 if isinstance(frameskip, tuple) else frameskip
    return EpisodeRecorder(path, fps=60 / mean_skip, overlay=overlay,
                           action_names=env.unwrapped.get_action_meanings())


def frame_adder(recorder, env):
    """play_episode's on_step that feeds the recorder the real screen and what the agent saw."""
    if recorder is None:
        return None
    return lambda observation, probs, value: recorder.add_frame(env.render(), observation, probs, value)


def finish_recording(recorder, final_path):
    """Close a training-time video under its final name; an episode cut short by the end of the run
    leaves no video. A failed recording is reported, never allowed to stop the run."""
    from video import VideoError

    try:
        written = recorder.close(final_path)
    except VideoError as error:
        print(f"test: video not saved: {error}", file=sys.stderr, flush=True)
        return
    if final_path is None and written is not None:
        written.unlink()


def test(rank, args, shared_model, counter, *, stop_event=None, events=None, make_env=None, best=None):
    """The course's test process: at the start of each episode copy the shared weights, play greedily,
    print the course's line, report it, wait args.eval_interval seconds, repeat until stopped.
    With `best` (a shared value), a new best score saves the weights that earned it to best.pt."""
    torch.manual_seed(args.seed + rank)
    torch.set_num_threads(1)
    video_dir = Path(args.run_dir) / "videos" if getattr(args, "run_dir", None) and args.record_every else None
    if make_env is None:
        env = create_atari_env(args.env_name, render_mode="rgb_array" if video_dir else None,
                               fire_reset=args.fire_reset)
    else:
        env = make_env(args)
    env.reset(seed=args.seed + rank)
    model = ActorCritic(env.observation_space.shape[0], env.action_space.n)
    model.eval()

    start_time, start_steps = time.time(), counter.value
    evaluations = 0
    while not (stop_event is not None and stop_event.is_set()):
        model.load_state_dict(shared_model.state_dict())  # a copy: the shared weights are only read
        num_steps = counter.value
        recorder = None
        if video_dir and evaluations % args.record_every == 0:
            video_dir.mkdir(parents=True, exist_ok=True)
            recorder = recorder_for(video_dir / f"eval-{evaluations:04d}.mp4", env, args.overlay)
        result = play_episode(env, model, args.max_episode_length, on_step=frame_adder(recorder, env),
                              stop_event=stop_event)
        if recorder is not None:
            finish_recording(recorder, None if result is None else recorder.path.with_name(
                f"eval-{evaluations:04d}-steps{num_steps}-reward{result[0]:g}.mp4"))
        if result is None:
            break
        evaluations += 1
        reward, length = result
        fps = (counter.value - start_steps) / max(time.time() - start_time, 1e-9)
        print(course_line(start_time, counter.value, fps, reward, length), flush=True)
        if events is not None:
            events.put(("eval", rank, num_steps, reward, length))
        if best is not None and reward > best.value:
            best.value = reward
            save_checkpoint(Path(args.run_dir) / "best.pt", {
                "model": model.state_dict(), "optimizer": None, "counter": num_steps, "elapsed": None,
                "best_reward": reward, "args": vars(args)})
        if stop_event is not None:
            stop_event.wait(args.eval_interval)
        else:
            time.sleep(args.eval_interval)


# ---------------------------------------------------------------- standalone evaluation (a command)

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Evaluate a saved A3C agent, optionally recording videos.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt, best.pt or a run directory")
    parser.add_argument("--env-name", default=None, help="environment id (default: the checkpoint's)")
    parser.add_argument("--episodes", type=positive_int, default=10)
    parser.add_argument("--record", metavar="DIR", default=None, help="write one MP4 per episode here")
    parser.add_argument("--overlay", action="store_true",
                        help="show the agent's input, policy and value beside the game")
    parser.add_argument("--sample", action="store_true", help="sample actions from the policy instead of argmax")
    parser.add_argument("--noop-max", type=non_negative_int, default=0,
                        help="up to K random no-ops at each start (papers: 30)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-episode-length", type=positive_int, default=None)
    parser.error = lambda message: _exit_with(parser.prog, message)
    return parser.parse_args(argv)


def _exit_with(prog: str, message: str):
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def evaluate(args) -> dict:
    """Play args.episodes episodes with a checkpoint's weights; print each and a summary."""
    from checkpoint import load_checkpoint
    from envs import resolve_env_id

    data = load_checkpoint(args.checkpoint)
    saved = data["args"]
    env_name = args.env_name or saved["env_name"]
    resolve_env_id(env_name)
    env = create_atari_env(env_name, render_mode="rgb_array" if args.record else None,
                           fire_reset=saved.get("fire_reset", False))
    data = load_checkpoint(args.checkpoint, num_actions=env.action_space.n)
    torch.manual_seed(args.seed)
    env.reset(seed=args.seed)
    env.action_space.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = ActorCritic(env.observation_space.shape[0], env.action_space.n)
    model.load_state_dict(data["model"])
    model.eval()
    max_length = args.max_episode_length or saved.get("max_episode_length", 1_000_000)
    record_dir = Path(args.record) if args.record else None
    if record_dir:
        record_dir.mkdir(parents=True, exist_ok=True)

    start_time, rewards, lengths = time.time(), [], []
    for episode in range(args.episodes):
        recorder = None
        if record_dir:
            recorder = recorder_for(record_dir / f"episode-{episode:03d}.mp4", env, args.overlay)
        reward, length = play_episode(env, model, max_length, sample=args.sample, noop_max=args.noop_max,
                                      rng=rng, on_step=frame_adder(recorder, env))
        if recorder is not None:
            recorder.close()
        rewards.append(reward)
        lengths.append(length)
        print(course_line(start_time, data.get("counter", 0), 0, reward, length), flush=True)

    summary = {
        "checkpoint": str(args.checkpoint), "env_name": env_name, "episodes": len(rewards),
        "mean": float(np.mean(rewards)), "std": float(np.std(rewards)),
        "min": float(np.min(rewards)), "max": float(np.max(rewards)),
        "rewards": rewards, "lengths": lengths, "policy": "sample" if args.sample else "greedy",
        "noop_max": args.noop_max, "seed": args.seed, "total_steps_trained": data.get("counter", 0),
    }
    print(f"Summary: {summary['episodes']} episodes, mean {summary['mean']:.2f}, std {summary['std']:.2f}, "
          f"min {summary['min']:g}, max {summary['max']:g}", flush=True)
    if record_dir:
        (record_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    from checkpoint import CheckpointError
    from envs import UnknownEnvError

    cli_args = parse_args()
    try:
        evaluate(cli_args)
    except (CheckpointError, UnknownEnvError) as error:
        _exit_with("test.py", str(error))
    except KeyboardInterrupt:
        sys.exit(130)

"""Publish a training run: the shipped agent, its curve, a clip and a GIF for the README.

    python tools/publish_results.py --run-dir runs/<run> --checkpoint runs/<run>/checkpoint.pt

(another game: --out docs/<game> --pretrained pretrained/<game>.pt --title "...")

writes pretrained/breakout.pt (weights and the run's arguments, no optimizer state: a few MB),
docs/breakout/progress.csv and learning_curve.png (copied and redrawn from the run), and
docs/breakout/clip.mp4 and clip.gif: the start of one greedy evaluation episode with the overlay view.
"""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import av
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from a3c_extras.checkpoints import load_checkpoint, save_checkpoint  # noqa: E402
from a3c_extras.evaluation import evaluate  # noqa: E402
from a3c_extras.run_record import plot_learning_curve  # noqa: E402
from a3c_extras.videos import EpisodeRecorder  # noqa: E402
from envs import create_atari_env  # noqa: E402
from model import ActorCritic  # noqa: E402


def decoded_frames(path: Path, limit: int):
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= limit:
                break
            yield frame.to_ndarray(format="rgb24")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--checkpoint", required=True, type=Path, help="the weights to ship")
    parser.add_argument("--out", default=ROOT / "docs" / "breakout", type=Path)
    parser.add_argument("--pretrained", default=ROOT / "pretrained" / "breakout.pt", type=Path)
    parser.add_argument("--seed", type=int, default=1, help="seed of the recorded episode")
    parser.add_argument(
        "--env-name",
        default=None,
        help="the game the shipped file names, which test.py plays by default (default: the run's)",
    )
    parser.add_argument("--clip-seconds", type=float, default=40)
    parser.add_argument("--gif-seconds", type=float, default=12)
    parser.add_argument("--title", default=None, help="the curve's title (default: the shipped agent's)")
    args = parser.parse_args()

    data = load_checkpoint(args.checkpoint)
    if args.env_name:  # trained with sticky actions, say, and evaluated by default on the papers' game
        data["args"] = {**data["args"], "env_name": args.env_name}
    args.pretrained.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        args.pretrained,
        {key: data.get(key) for key in ("model", "counter", "elapsed", "best_reward", "args", "frame_stats")}
        | {"optimizer": None},
    )
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.run_dir / "progress.csv", args.out / "progress.csv")
    plot_learning_curve(
        args.out / "progress.csv",
        args.out / "learning_curve.png",
        args.title or f"A3C on {data['args']['env_name']}; the shipped agent: {data['counter']:,} agent steps",
    )

    with tempfile.TemporaryDirectory() as tmp:
        evaluate(
            argparse.Namespace(
                checkpoint=str(args.pretrained),
                env_name=None,
                episodes=1,
                record=tmp,
                overlay=True,
                sample=False,
                noop_max=0,
                seed=args.seed,
                max_episode_length=None,
            ),
            ActorCritic,
            create_atari_env,
        )
        episode = Path(tmp) / "episode-000.mp4"
        with av.open(str(episode)) as container:
            fps = float(container.streams.video[0].average_rate)  # the game's speed
        recorder = EpisodeRecorder(args.out / "clip.mp4", fps=fps)
        for frame in decoded_frames(episode, int(args.clip_seconds * fps)):
            recorder.add_frame(frame)
        recorder.close()
        gif = [Image.fromarray(f) for f in decoded_frames(episode, int(args.gif_seconds * fps))]
        gif[0].save(
            args.out / "clip.gif",
            save_all=True,
            append_images=gif[1:],
            duration=round(1000 / fps),
            loop=0,
            optimize=True,
        )
    print(f"wrote {args.pretrained}, {args.out}/progress.csv, learning_curve.png, clip.mp4, clip.gif")


if __name__ == "__main__":
    main()

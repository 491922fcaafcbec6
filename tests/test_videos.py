"""Videos of the agent: the recorder, the overlay, and the commands that record (test.py, main.py)."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from gymnasium.spaces import Discrete

from a3c_extras import overlay
from a3c_extras import videos as video
from a3c_extras.atari import options
from a3c_extras.checkpoints import checkpoint as checkpoint_of
from a3c_extras.checkpoints import save_checkpoint
from a3c_extras.evaluation import play_episode
from envs import create_atari_env
from helpers import LiveRun, no_run_left_behind, params_from  # noqa: F401 (the fixture stops every run)
from model import ActorCritic

ROOT = Path(__file__).resolve().parents[1]  # the commands run from the repository root
NAMES = ["NOOP", "FIRE", "RIGHT", "LEFT"]
CHILD_ENV = dict(os.environ, OMP_NUM_THREADS="1")  # the machine's cores are shared: one thread per process


# ---------------------------------------------------------------- helpers


def decode(path):
    """(codec, pixel format, width, height, frame rate, frames as RGB arrays) of an MP4, read with PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        context = stream.codec_context
        return context.name, context.format.name, stream.width, stream.height, stream.average_rate, frames


def top_level_boxes(path) -> list[str]:
    """The kinds of the MP4's top-level boxes, in file order."""
    kinds, data = [], Path(path).read_bytes()
    offset = 0
    while offset + 8 <= len(data):
        size, kind = int.from_bytes(data[offset : offset + 4], "big"), data[offset + 4 : offset + 8].decode("latin-1")
        if size == 1:  # a 64-bit size follows the kind
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        kinds.append(kind)
        if size < 8:
            break
        offset += size
    return kinds


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def synthetic_screen(i: int) -> np.ndarray:
    """A 210x160 screen with saturated colour blocks (a swap of red and blue shows) and a square that
    moves with i (frames out of order show)."""
    screen = np.zeros((210, 160, 3), dtype=np.uint8)
    screen[20:60, 0:80] = (200, 72, 72)
    screen[20:60, 80:160] = (66, 72, 200)
    screen[60:100, :] = (72, 160, 72)
    screen[120:140, 2 * i : 2 * i + 20] = 255
    return screen


def synthetic_step(rng: np.random.Generator):
    observation = rng.normal(size=(1, 42, 42)).astype(np.float32)
    return observation, rng.dirichlet(np.ones(4)), float(rng.normal())


def run_briefly(function, seconds: float = 20.0):
    """Run function in a thread; fail the test if it has not returned after `seconds` (a hang). Returns
    the exception it raised, or None."""
    outcome = {}

    def body():
        try:
            function()
        except Exception as error:  # noqa: BLE001 - handed to the test, which checks it
            outcome["error"] = error

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    return outcome.get("error")


# ---------------------------------------------------------------- the recorder


def test_synthetic_frames_become_a_browser_friendly_h264_mp4(tmp_path):
    recorder = video.EpisodeRecorder(tmp_path / "episode.mp4", fps=15, action_names=NAMES)
    screens = [synthetic_screen(i) for i in range(37)]
    for screen in screens:
        recorder.add_frame(screen, None, None, None)
    assert recorder.close() == tmp_path / "episode.mp4"

    codec, pixel_format, width, height, rate, frames = decode(tmp_path / "episode.mp4")
    assert (codec, pixel_format) == ("h264", "yuv420p")
    assert (width, height) == (160, 210)
    assert rate == 15
    assert len(frames) == 37  # one video frame per add_frame
    for screen, frame in zip(screens, frames):
        assert mean_abs_diff(frame, screen) < 2.5
        assert mean_abs_diff(frame, screen[:, :, ::-1]) > 10  # red and blue swapped would fail
    boxes = top_level_boxes(tmp_path / "episode.mp4")
    assert boxes.index("moov") < boxes.index("mdat"), boxes  # faststart: playable while downloading
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episode.mp4"]


def test_overlay_video_is_wider_and_shows_the_composed_frames(tmp_path):
    rng = np.random.default_rng(0)
    recorder = video.EpisodeRecorder(tmp_path / "overlay.mp4", fps=60 / 3.5, overlay=True, action_names=NAMES)
    expected = []
    for i in range(12):
        observation, probs, value = synthetic_step(rng)
        recorder.add_frame(synthetic_screen(i), observation, probs, value)
        expected.append(overlay.compose_frame(synthetic_screen(i), observation, probs, value, NAMES))
    recorder.close()

    codec, _, width, height, rate, frames = decode(tmp_path / "overlay.mp4")
    assert codec == "h264"
    assert height == 210 and width > 160 and width % 2 == 0
    assert width == expected[0].shape[1]
    assert rate == pytest.approx(60 / 3.5, rel=1e-3)  # a stochastic frameskip of 2 to 5: 3.5 on average
    assert len(frames) == 12
    for composed, frame in zip(expected, frames):
        assert mean_abs_diff(frame, composed) < 4
        assert mean_abs_diff(frame[:, :160], composed[:, :160]) < 2.5


def test_a_real_breakout_episode_is_recorded_frame_for_frame(tmp_path):
    torch.manual_seed(0)
    env = create_atari_env("BreakoutDeterministic-v4", link=options(render=True))
    env.reset(seed=0)
    model = ActorCritic(1, Discrete(4))
    model.eval()
    plain = video.recorder_for(tmp_path / "plain.mp4", env, False)
    overlaid = video.recorder_for(tmp_path / "overlay.mp4", env, True)
    kept = {}  # a few steps, to compare with the decoded video

    def on_step(observation, probs, value):
        screen = env.render()
        if plain.frames % 10 == 0:
            kept[plain.frames] = (screen.copy(), overlay.compose_frame(screen, observation, probs, value, NAMES))
        plain.add_frame(screen, observation, probs, value)
        overlaid.add_frame(screen, observation, probs, value)

    reward, length, _ = play_episode(env, model, 300, on_step=on_step)
    env.close()
    plain.close()
    renamed = tmp_path / f"overlay-steps0-reward{reward:g}.mp4"
    assert overlaid.close(rename_to=renamed) == renamed and overlaid.path == renamed
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["plain.mp4", renamed.name])

    codec, _, width, height, rate, frames = decode(tmp_path / "plain.mp4")
    assert (codec, width, height, rate) == ("h264", 160, 210, 15)  # BreakoutDeterministic: 60 Hz / frameskip 4
    assert len(frames) == length == plain.frames
    for step, (screen, _) in kept.items():
        assert mean_abs_diff(frames[step], screen) < 2.5
        assert mean_abs_diff(frames[step], screen[:, :, ::-1]) > 3 * mean_abs_diff(frames[step], screen)

    codec, _, width, height, _, frames = decode(renamed)
    assert codec == "h264" and height == 210 and width > 160
    assert len(frames) == length
    for step, (screen, composed) in kept.items():
        assert mean_abs_diff(frames[step], composed) < 4
        assert mean_abs_diff(frames[step][:, :160], screen) < 2.5


def test_add_frame_waits_for_a_slow_encoder_instead_of_piling_up_frames(tmp_path, monkeypatch):
    gate = threading.Event()
    compose = video.EpisodeRecorder._compose

    def slow_compose(self, step):
        gate.wait()
        return compose(self, step)

    monkeypatch.setattr(video.EpisodeRecorder, "_compose", slow_compose)
    recorder = video.EpisodeRecorder(tmp_path / "slow.mp4", fps=15, queue_size=4)
    producer = threading.Thread(
        target=lambda: [recorder.add_frame(synthetic_screen(i)) for i in range(60)], daemon=True
    )
    producer.start()
    time.sleep(0.5)
    assert producer.is_alive()
    assert recorder.frames <= 4 + 1  # the queue's 4 plus the one the encoder holds: memory is bounded
    gate.set()
    producer.join(20)
    assert not producer.is_alive()
    recorder.close()
    assert len(decode(tmp_path / "slow.mp4")[-1]) == 60


def test_a_failing_encoder_makes_close_raise_instead_of_hang(tmp_path, monkeypatch):
    def broken(self, step):
        raise RuntimeError("simulated encoder failure")

    monkeypatch.setattr(video.EpisodeRecorder, "_compose", broken)
    recorder = video.EpisodeRecorder(tmp_path / "broken.mp4", fps=15, queue_size=2)

    def feed():  # more frames than the queue holds: add_frame must not wait forever either
        try:
            for i in range(50):
                recorder.add_frame(synthetic_screen(i))
        except video.VideoError:
            pass

    assert run_briefly(feed) is None
    error = run_briefly(recorder.close)
    assert isinstance(error, video.VideoError)
    assert "simulated encoder failure" in str(error) and "broken.mp4" in str(error)
    assert list(tmp_path.iterdir()) == []  # no half-written video left behind


def test_an_episode_without_frames_leaves_no_file(tmp_path):
    recorder = video.EpisodeRecorder(tmp_path / "empty.mp4", fps=15)
    assert recorder.close() is None
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(video.VideoError):
        recorder.add_frame(synthetic_screen(0))


def test_overlay_layout(tmp_path):
    screen = synthetic_screen(3)
    observation = np.full((1, 42, 42), -1.0, dtype=np.float32)  # grey (-1 + 3) / 6 * 255 = 85
    observation[0, :, :21] = 5.0  # beyond the clip: white
    observation[0, 10, 30] = -7.0  # beyond the clip: black
    probs = np.array([0.1, 0.6, 0.2, 0.1])
    frame = overlay.compose_frame(screen, observation, probs, 0.5, NAMES)

    assert frame.dtype == np.uint8 and frame.shape[0] == 210 and frame.shape[1] % 2 == 0
    assert np.array_equal(frame[:, :160], screen)
    size = 42 * overlay.INPUT_SCALE
    top, left = (210 - size) // 2, 160 + overlay.MARGIN
    grey = np.full((42, 42), 85, dtype=np.uint8)
    grey[:, :21], grey[10, 30] = 255, 0
    enlarged = np.kron(grey, np.ones((overlay.INPUT_SCALE, overlay.INPUT_SCALE), dtype=np.uint8))  # nearest-neighbour
    for channel in range(3):
        assert np.array_equal(frame[top : top + size, left : left + size, channel], enlarged)

    # The greedy action is highlighted by default, and the highlight follows the action taken.
    assert np.array_equal(frame, overlay.compose_frame(screen, observation, probs, 0.5, NAMES, action=1))
    assert not np.array_equal(frame, overlay.compose_frame(screen, observation, probs, 0.5, NAMES, action=2))
    # The highlighted bar grows with the probability; the value is written out.
    likelier = overlay.compose_frame(screen, observation, np.array([0.0, 0.9, 0.1, 0.0]), 0.5, NAMES)
    highlighted = [np.all(f == overlay.CHOSEN, axis=2).sum() for f in (frame, likelier)]
    assert highlighted[1] > highlighted[0] > 0
    assert not np.array_equal(frame, overlay.compose_frame(screen, observation, probs, -0.5, NAMES))


# ---------------------------------------------------------------- the commands that record


def run_command(*args, timeout: float = 120):
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=CHILD_ENV, capture_output=True, text=True, timeout=timeout, check=False
    )


def episode_rewards(stdout: str) -> list[float]:
    return [float(x) for x in re.findall(r"episode reward (\S+),", stdout)]


@pytest.fixture(scope="module")
def evaluations(tmp_path_factory):
    """A fresh model's checkpoint, evaluated twice with the same seed: without and with the overlay."""
    folder = tmp_path_factory.mktemp("evaluate")
    checkpoint = folder / "fresh.pt"
    save_checkpoint(checkpoint, checkpoint_of(ActorCritic(1, Discrete(4)), None, 0, 0.0, None, params_from([])))
    before = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    runs = {}
    for name, extra in (("plain", []), ("overlay", ["--overlay"])):
        command = [
            "test.py",
            "--checkpoint",
            str(checkpoint),
            "--episodes",
            "2",
            "--record",
            str(folder / name),
            "--seed",
            "3",
            *extra,
        ]
        runs[name] = (run_command(*command), folder / name)
    return runs, hashlib.sha256(checkpoint.read_bytes()).hexdigest() == before


def test_evaluation_command_records_each_episode_and_a_summary(evaluations):
    runs, checkpoint_unchanged = evaluations
    result, folder = runs["plain"]
    assert result.returncode == 0, result.stderr
    assert checkpoint_unchanged
    rewards = episode_rewards(result.stdout)
    assert len(rewards) == 2
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["rewards"] == rewards
    assert summary["mean"] == pytest.approx(np.mean(rewards))
    assert summary["std"] == pytest.approx(np.std(rewards))
    assert (summary["min"], summary["max"]) == (min(rewards), max(rewards))
    videos = sorted(folder.glob("*.mp4"))
    assert [v.name for v in videos] == ["episode-000.mp4", "episode-001.mp4"]
    for path, length in zip(videos, summary["lengths"]):
        codec, _, width, height, _, frames = decode(path)
        assert (codec, width, height, len(frames)) == ("h264", 160, 210, length)


def test_evaluation_is_repeatable_and_overlay_widens_the_video(evaluations):
    runs, _ = evaluations
    (plain, _), (overlay, folder) = runs["plain"], runs["overlay"]
    assert overlay.returncode == 0, overlay.stderr
    assert episode_rewards(overlay.stdout) == episode_rewards(plain.stdout)  # same seed, same games
    lengths = json.loads((folder / "summary.json").read_text())["lengths"]
    for episode, length in enumerate(lengths):
        _, _, width, height, _, frames = decode(folder / f"episode-{episode:03d}.mp4")
        assert height == 210 and width > 160 and len(frames) == length


def test_evaluation_of_a_missing_checkpoint_is_one_line_and_status_2(tmp_path):
    result = run_command("test.py", "--checkpoint", str(tmp_path / "missing.pt"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "missing.pt" in result.stderr and "Traceback" not in result.stderr


def test_training_run_records_evaluation_videos_named_by_steps_and_reward(tmp_path):
    run_dir = tmp_path / "run"
    run = LiveRun(
        "--num-processes",
        "1",
        "--record-every",
        "1",
        "--eval-interval",
        "0",
        "--run-dir",
        str(run_dir),
        "--fire-reset",  # the game serves itself: the untrained agent's games end
    )
    # The event, not a step budget: the test process has printed its first finished episode.
    finished_line = r"^Time .*, episode length (\d+), num steps \d+, FPS \d+$"  # not cut short
    run.wait_for(finished_line)
    os.killpg(run.proc.pid, signal.SIGINT)
    assert run.wait(timeout=60) == 0, run.errors
    names = sorted(p.name for p in (run_dir / "videos").iterdir())
    finished = [n for n in names if re.fullmatch(r"eval-\d{4}-steps\d+-reward-?\d+(\.\d+)?\.mp4", n)]
    assert finished, names
    assert not [n for n in names if n.endswith(".part")], names  # the test process closed its last video
    # The first evaluation's video has one frame per step of the episode it printed.
    first_length = int(next(m.group(1) for line in run.lines if (m := re.search(finished_line, line))))
    codec, _, width, height, _, frames = decode(run_dir / "videos" / finished[0])
    assert (codec, width, height, len(frames)) == ("h264", 160, 210, first_length)


def test_same_seed_same_scores_when_sampling_with_noops(evaluations):
    """Sampled actions and random no-ops make every game different: only the seed makes them repeat."""
    checkpoint = evaluations[0]["plain"][1].parent / "fresh.pt"

    def lengths_and_rewards(seed):
        result = run_command(
            "test.py",
            "--checkpoint",
            str(checkpoint),
            "--episodes",
            "3",
            "--sample",
            "--noop-max",
            "30",
            "--seed",
            str(seed),
        )
        assert result.returncode == 0, result.stderr
        return re.findall(r"episode reward (\S+), episode length (\d+)", result.stdout)

    first = lengths_and_rewards(5)
    assert len(first) == 3
    assert lengths_and_rewards(5) == first
    assert lengths_and_rewards(6) != first

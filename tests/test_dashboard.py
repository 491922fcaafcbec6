"""The run's TensorBoard charts (a3c_extras/dashboard.py), read back by TensorBoard itself."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from a3c_extras.dashboard import Dashboard
from a3c_extras.events import EvalEpisode, Losses, Speed, TrainGame
from a3c_extras.supervision import Run
from catch import Catch, make_catch
from helpers import LiveRun, no_run_left_behind, params_from, shared_model_and_optimizer  # noqa: F401 (the fixture stops every run)

TAGS = {
    "charts/episodic_return",
    "charts/episodic_length",
    "charts/SPS",
    "charts/learning_rate",
    "losses/policy_loss",
    "losses/value_loss",
    "losses/entropy",
    "losses/grad_norm",
    "eval/episode_reward",
    "eval/episode_length",
    "eval/cut_short_reward",
    "eval/cut_short_length",
}
EVAL_TAGS = {"eval/episode_reward", "eval/episode_length"}  # finished games of the test process
CUT_TAGS = {"eval/cut_short_reward", "eval/cut_short_length"}  # its episodes cut short (a3c_extras/stall.py)
LOOPBACK = "127.0.0.1"


def write_some(dashboard: Dashboard, steps: list[int]) -> None:
    for s in steps:  # as the run's loop hands them on (a3c_extras/jobs.py)
        dashboard.on_event(TrainGame(0, s, ret=s / 100, length=s // 10))
        dashboard.on_event(Speed(s, sps=900.0, lr=1e-4))
        dashboard.on_event(Losses(0, s, policy=-0.5, value=2.0, entropy=1.3, grad_norm=40.0))
        dashboard.on_event(EvalEpisode(s, reward=7.0, length=500))
        dashboard.on_event(EvalEpisode(s, reward=0.0, length=1000, cut_short=True))
    dashboard.on_end()


def scalars(run_dir) -> dict[str, list]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}


def test_every_chart_is_written_against_agent_steps_and_a_resume_continues_them(tmp_path):
    write_some(Dashboard(tmp_path), [100, 200, 300])
    write_some(Dashboard(tmp_path), [400, 500])  # --resume: the same directory, a second event file
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    charts = scalars(tmp_path)
    assert set(charts) == TAGS
    for tag in TAGS:
        assert [e.step for e in charts[tag]] == [100, 200, 300, 400, 500], tag
    assert [e.value for e in charts["charts/episodic_return"]] == pytest.approx([1, 2, 3, 4, 5])
    assert charts["eval/episode_length"][-1].value == 500 and charts["eval/cut_short_length"][-1].value == 1000


def test_a_failed_write_is_reported_once_and_the_run_goes_on(tmp_path, capsys):
    dashboard = Dashboard(tmp_path)

    def broken(*args, **kwargs):
        raise OSError("No space left on device")

    dashboard.writer.add_scalar = broken
    dashboard.train_game(1, 1.0, 1)
    dashboard.losses(2, 0.0, 0.0, 0.0, 0.0)
    dashboard.close()
    lines = capsys.readouterr().err.splitlines()
    assert not dashboard.on
    assert len(lines) == 1 and "No space left on device" in lines[0] and str(tmp_path) in lines[0], lines


def test_a_run_directory_that_cannot_be_made_turns_the_dashboard_off(tmp_path, capsys):
    (tmp_path / "taken").write_text("a file, not a directory")
    dashboard = Dashboard(tmp_path / "taken" / "run")
    write_some(dashboard, [1, 2])
    assert not dashboard.on
    assert len(capsys.readouterr().err.splitlines()) == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def test_tensorboard_serves_the_charts_of_every_run(tmp_path):
    write_some(Dashboard(tmp_path / "breakout-1"), [10, 20])
    write_some(Dashboard(tmp_path / "breakout-2"), [10])
    want = {"breakout-1": TAGS, "breakout-2": TAGS}
    port, log = free_port(), tmp_path / "tensorboard.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tensorboard.main",
                "--logdir",
                str(tmp_path),
                "--host",
                LOOPBACK,
                "--port",
                str(port),
                "--reload_interval",
                "1",
                "--load_fast",
                "false",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline, seen = time.monotonic() + 60, {}
        while seen != want and time.monotonic() < deadline and server.poll() is None:
            time.sleep(1)
            try:
                with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/data/plugin/scalars/tags", timeout=5) as r:
                    seen = {run: set(tags) for run, tags in json.load(r).items()}
            except OSError:
                pass  # not listening yet
        assert seen == want, log.read_text()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_the_charts_are_on_unless_no_tensorboard():
    assert params_from([]).no_tensorboard is False
    assert params_from(["--no-tensorboard"]).no_tensorboard is True


def sitting(tmp_path, *argv) -> None:
    """main.py on one worker until its test process has ended an episode and a training game was counted in a
    status line (the events the charts are made of), then Ctrl-C: a sitting ended by events, not by a budget."""
    run = LiveRun(
        "--num-processes", "1", "--eval-interval", "0", "--record-every", "0", "--status-interval", "1", *argv
    )
    run.wait_for(r"^Time ", timeout=180)
    run.wait_for(r"train return \(last", timeout=180)
    time.sleep(1.5)  # one more status line: its speed
    os.killpg(run.proc.pid, signal.SIGINT)
    assert run.wait(timeout=60) == 0, run.errors


def test_a_run_writes_every_chart_and_a_resume_continues_them(tmp_path):
    """main.py itself: after a sitting every chart is there with increasing steps (one worker, so the games arrive
    in step order); after --resume the steps go on past the first sitting's."""
    sitting(tmp_path, "--run-dir", str(tmp_path))
    charts = scalars(tmp_path)
    # the test process's episodes: finished games, or cut short if this untrained agent never serves
    assert TAGS - EVAL_TAGS - CUT_TAGS <= set(charts) <= TAGS, set(charts) ^ TAGS
    assert EVAL_TAGS <= set(charts) or CUT_TAGS <= set(charts), set(charts)
    for tag in charts:  # an evaluation's step is when its weights were loaded: 0 for a first episode begun at once
        steps = [e.step for e in charts[tag]]
        assert steps == sorted(steps) and (steps[-1] > 0 or tag in EVAL_TAGS | CUT_TAGS), tag
    end_of_first = max(e.step for e in charts["charts/episodic_return"])
    sitting(tmp_path, "--resume", str(tmp_path))
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    resumed = [e.step for e in scalars(tmp_path)["charts/episodic_return"]]
    assert resumed == sorted(resumed) and resumed[-1] > end_of_first


def short_run(tmp_path, *argv):
    """A run on Catch in this process, with no children: its steps are set by hand."""
    args = params_from(["--num-processes", "1", "--run-dir", str(tmp_path), *argv])
    shared_model, optimizer = shared_model_and_optimizer(args, Catch())
    return Run(args, shared_model, optimizer, make_env=make_catch)


def test_a_run_shorter_than_the_status_interval_ends_with_its_speed_and_learning_rate(tmp_path):
    """charts/SPS and charts/learning_rate come every --status-interval (30 s); the end of a run writes the
    last ones, so a short run has them too."""
    run = short_run(tmp_path, "--max-steps", "5000", "--lr", "0.0003")
    run.tick = lambda: run.counts.steps.__setitem__(0, 5000)  # the workers' 5,000 steps, at once
    assert run.supervise([]) == 0
    charts = scalars(tmp_path)
    assert [(e.step, e.value) for e in charts["charts/learning_rate"]] == [(5000, pytest.approx(0.0003))]
    assert [e.step for e in charts["charts/SPS"]] == [5000] and charts["charts/SPS"][0].value > 0


def test_an_evaluation_cut_short_is_recorded_as_such(tmp_path, capsys):
    """Not the evaluation's score: its own kind in progress.csv, its own charts, and said so in the status line."""
    run = short_run(tmp_path, "--max-steps", "100")
    run.emit(EvalEpisode(40, 3.0, 250))
    run.emit(EvalEpisode(80, 0.0, 1000, cut_short=True))
    run.tick = lambda: run.counts.steps.__setitem__(0, 100)
    assert run.supervise([]) == 0
    rows = (tmp_path / "progress.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["eval", "eval_cut"] and rows[2].endswith(",80,,0.0,1000")
    charts = scalars(tmp_path)
    assert [(e.step, e.value) for e in charts["eval/episode_reward"]] == [(40, 3.0)]
    assert [(e.step, e.value) for e in charts["eval/cut_short_length"]] == [(80, 1000)]
    assert "last eval 0.0 (cut short)" in capsys.readouterr().out

"""The memory check (a3c_extras/memory.py): a run that would not fit stops before its children start, in one line
with exit status 2; one that fits goes on. The available memory is given to the check, never the machine's."""

import multiprocessing

import pytest
from gymnasium.spaces import Discrete

from a3c_extras import memory
from a3c_extras.checkpoints import checkpoint, save_checkpoint
from a3c_extras.supervision import Run
from helpers import LiveRun, no_run_left_behind, own_lines, params_from  # noqa: F401 (the fixture stops every run)
from model import ActorCritic

GB = 2**30


def refused(capsys, args, available: float, ctx=multiprocessing) -> str:
    """The one line the check wrote on stderr when it stopped the run, after checking its exit status."""
    with pytest.raises(SystemExit) as stopped:
        memory.check(args, ctx, available=available)
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_run_that_would_not_fit_stops_in_one_line_naming_what_it_needs_and_what_would_fit(capsys):
    args = params_from(["--num-processes", "16", "--envs-per-worker", "16"])
    line = refused(capsys, args, available=3 * GB, ctx=multiprocessing.get_context("fork"))
    assert line == (
        "main.py: error: 16 workers x 16 games need about 4.2 GB, 3.0 GB is available: 10 workers would fit "
        "(--num-processes 10 --envs-per-worker 16), or 10 games per worker (--envs-per-worker 10); "
        "--no-memory-check starts it anyway"
    )


def test_the_workers_and_the_games_it_names_do_fit_and_one_more_would_not():
    run = memory.estimate(params_from(["--num-processes", "16", "--envs-per-worker", "16"]))
    assert run.need(10) <= 3 * GB < run.need(11)
    assert run.need(16, 10) <= 3 * GB < run.need(16, 11)


def test_a_run_that_fits_passes(capsys):
    for argv, available in [
        (["--num-processes", "16", "--envs-per-worker", "16"], 5 * GB),
        (["--num-processes", "2"], 1 * GB),
        (["--num-processes", "2", "--rollout", "classic"], 1 * GB),
    ]:
        assert memory.check(params_from(argv), multiprocessing.get_context("fork"), available=available) is None
    assert capsys.readouterr().err == ""


def test_with_too_little_memory_for_any_worker_of_its_games_it_names_one_worker_of_fewer_or_none(capsys):
    args = params_from(["--num-processes", "4", "--envs-per-worker", "16"])
    line = refused(capsys, args, available=0.6 * GB, ctx=multiprocessing.get_context("fork"))
    assert line.endswith(
        "0.6 GB is available: 1 worker x 4 games would fit (--num-processes 1 --envs-per-worker 4); "
        "--no-memory-check starts it anyway"
    )
    line = refused(capsys, params_from(["--num-processes", "1"]), available=0.3 * GB)
    assert "1 worker x 1 game needs about" in line and "not even one worker of one game would fit" in line


def test_the_estimate_covers_the_measured_workers_and_scales_with_the_rollout():
    def worker_mb(games, num_steps, frame_size=42):
        return memory.Estimate(1, games, num_steps, frame_size).worker() / memory.MB

    # the highest private memory measured per worker (a3c_extras/memory.py), and not far above it
    for games, num_steps, measured in [(1, 20, 36), (16, 5, 76), (16, 20, 177), (16, 40, 341)]:
        assert measured <= worker_mb(games, num_steps) <= 1.3 * measured
    # 80x80 frames: the rows kept grow with the convolutions' activations, 82,400 floats against 23,393
    rows = 16 * 22
    assert worker_mb(16, 20, 80) - worker_mb(16, 20) == pytest.approx(rows * 0.44 * (82400 / 23393 - 1))


def test_children_that_are_not_forked_count_their_own_imports():
    args = params_from(["--num-processes", "4"])
    forked, spawned = memory.estimate(args, forked=True), memory.estimate(args, forked=False)
    assert spawned.need() - forked.need() == pytest.approx(memory.MARGIN * 5 * memory.IMPORTS)  # 4 workers, test
    assert memory.forks(multiprocessing.get_context("fork"))
    assert not memory.forks(multiprocessing.get_context("spawn"))


def test_no_memory_check_and_a_cluster_run_are_not_checked():
    assert memory.check(params_from(["--no-memory-check"]), available=0) is None
    args = params_from([])
    args.ray_address = "auto"  # its workers run on the cluster's machines
    assert memory.check(args, available=0) is None


def test_a_resumed_run_is_checked_again_unless_its_own_sitting_says_not_to(tmp_path):
    """--no-memory-check belongs to the sitting that gave it: the machine, or what it has free, may have changed."""
    args = params_from(["--no-memory-check", "--run-dir", str(tmp_path)])
    save_checkpoint(tmp_path / "checkpoint.pt", checkpoint(ActorCritic(1, Discrete(4)), None, 1_000, 1.0, None, args))
    assert not params_from(["--resume", str(tmp_path)]).no_memory_check
    assert params_from(["--resume", str(tmp_path), "--no-memory-check"]).no_memory_check


def test_run_checks_before_it_makes_the_run_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(memory, "available_memory", lambda: 0.1 * GB)
    args = params_from(["--num-processes", "2", "--run-dir", str(tmp_path / "run")])
    with pytest.raises(SystemExit) as stopped:
        Run(args, None, None)  # stops before it touches the model, the optimizer or the disk
    assert stopped.value.code == 2
    assert "main.py: error: 2 workers x 1 game need about" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_main_refuses_a_run_that_no_machine_could_hold_without_starting_a_child(tmp_path):
    # a rollout of 10**9 steps keeps rows of 0.44 MB each: about 400 TB, more than any machine has
    run = LiveRun("--num-processes", "1", "--num-steps", "1000000000", "--max-steps", "1", "--run-dir", str(tmp_path))
    assert run.wait(timeout=60) == 2
    lines = own_lines("\n".join(run.errors))
    assert len(lines) == 1 and lines[0].startswith("main.py: error: 1 worker x 1 game needs about"), run.errors
    assert "not even one worker of one game would fit" in lines[0]
    assert not any(tmp_path.iterdir())

"""The run's record (a3c_extras/run_record.py): the training curve drawn in learning_curve.png and by
tools/compare_runs.py."""

import gc

import numpy as np

from a3c_extras.run_record import ProgressLog, levels_reached, plot_learning_curve, read_progress, training_curve

# Five training games as progress.csv has them: rows in the order they were written (so their times increase),
# the steps slightly out of order since each worker writes its own games.
STEPS = np.array([10, 30, 20, 40, 50])
RETURNS = np.array([1.0, 3.0, 2.0, 4.0, 5.0])
SECONDS = np.array([36.0, 72.0, 108.0, 144.0, 180.0])


def write_progress(path):
    """progress.csv of one evaluation episode, one cut short, and the five training games."""
    log = ProgressLog(path)
    log.write("eval", 50.0, 25, None, 9.0, 300)
    log.write("eval_cut", 60.0, 35, None, 2.0, 1000)
    for s, r, t in zip(STEPS, RETURNS, SECONDS):
        log.write("train", t, int(s), 0, float(r), 100)
    log.close()


def test_training_curve_averages_the_last_games_by_step_against_hours():
    steps, hours, curve = training_curve(STEPS, RETURNS, SECONDS, window=3)
    np.testing.assert_array_equal(steps, [30, 40, 50])
    np.testing.assert_allclose(curve, [2.0, 3.0, 4.0])  # returns in step order: 1 2 3 4 5
    np.testing.assert_allclose(hours, [0.03, 0.04, 0.05])  # the 3rd, 4th and 5th game to end: 108 s, 144 s, 180 s


def test_training_curve_of_fewer_games_than_the_window_is_one_point():
    steps, hours, curve = training_curve(STEPS, RETURNS, SECONDS)
    np.testing.assert_array_equal(steps, [50])
    np.testing.assert_allclose(curve, [3.0])
    np.testing.assert_allclose(hours, [0.05])


def test_evaluations_cut_short_are_kept_apart_from_finished_games(tmp_path):
    write_progress(tmp_path / "progress.csv")
    assert "eval_cut,60.0,35,,2.0,1000" in (tmp_path / "progress.csv").read_text().splitlines()
    evals = read_progress(tmp_path / "progress.csv")["eval"]
    assert list(evals[0]) == [25] and list(evals[1]) == [9.0]  # the curve's evaluations: the finished one


def test_training_curve_from_progress_csv(tmp_path):
    write_progress(tmp_path / "progress.csv")
    steps, hours, curve = training_curve(*read_progress(tmp_path / "progress.csv")["train"], window=3)
    np.testing.assert_array_equal(steps, [30, 40, 50])
    np.testing.assert_allclose(curve, [2.0, 3.0, 4.0])
    np.testing.assert_allclose(hours, [0.03, 0.04, 0.05])


def test_drawing_the_curve_leaves_no_figure_behind(tmp_path):
    """The main process redraws learning_curve.png at every save for hours; a figure left to the cyclic
    collector (which seldom runs there) kept its memory, and RSS grew at each save. Collection is switched
    off here so that only the drawing's own clean-up can free the figure."""
    from matplotlib.figure import Figure

    write_progress(tmp_path / "progress.csv")
    gc.collect()
    gc.disable()
    try:
        plot_learning_curve(tmp_path / "progress.csv", tmp_path / "learning_curve.png", "test", window=3)
        alive = [o for o in gc.get_objects() if isinstance(o, Figure)]
    finally:
        gc.enable()
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    assert alive == []


def test_levels_reached_by_training_return_and_by_evaluations(tmp_path):
    log = ProgressLog(tmp_path / "progress.csv")
    for s, r, t in zip(STEPS, RETURNS, SECONDS):
        log.write("train", t, int(s), 0, float(r), 100)
    for s, r, t in [(15, 4.0, 50.0), (35, 1.0, 120.0), (45, 9.0, 160.0), (55, 50.0, 190.0)]:
        log.write("eval", t, s, None, r, 300)
    log.write("eval_cut", 200.0, 60, None, 90.0, 1000)  # cut short: not a finished game, reaches nothing
    log.close()
    reached = levels_reached(tmp_path / "progress.csv", [2.5, 3.5, 4.5, 30], train_window=3, eval_window=2)
    # training means of the last 3 games by step: 2 at step 30, 3 at 40, 4 at 50
    assert reached["train"] == [(40, 0.04), (50, 0.05), None, None]
    # evaluation means of the last 2: 2.5 at step 35 (120 s), 5 at 45 (160 s), 29.5 at 55
    assert reached["eval"] == [(35, 120 / 3600), (45, 160 / 3600), (45, 160 / 3600), None]


def test_a_curve_shorter_than_its_window_reaches_no_level(tmp_path):
    write_progress(tmp_path / "progress.csv")  # one finished evaluation episode, five training games
    reached = levels_reached(tmp_path / "progress.csv", [0], train_window=100, eval_window=5)
    assert reached == {"train": [None], "eval": [None]}


def compare_runs(argv, capsys) -> list[str]:
    """tools/compare_runs.py's main, run here; its printed lines."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "tools" / "compare_runs.py"
    spec = importlib.util.spec_from_file_location("compare_runs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(argv) == 0
    return capsys.readouterr().out.splitlines()


def test_compare_runs_puts_a_run_s_hours_at_a_throughput_measured_apart(tmp_path, capsys):
    """--rate: hours = agent steps / the rate, not the run's own clock (which counts what else the machine ran)."""
    write_progress(tmp_path / "progress.csv")  # five games, the last at step 50 and 180 s
    run = ["--run", f"arm={tmp_path}", "--at", "50", "--out", str(tmp_path / "c.png")]
    assert compare_runs(run, capsys)[0] == "arm: 3.0 at 50 agent steps (0.05 h)"  # its clock: 180 s
    assert compare_runs([*run, "--rate", "arm=0.01"], capsys)[0] == "arm: 3.0 at 50 agent steps (1.39 h)"  # 5,000 s


def test_compare_runs_refuses_a_rate_it_cannot_use_in_one_line(tmp_path, capsys):
    import pytest

    write_progress(tmp_path / "progress.csv")
    run = ["--run", f"arm={tmp_path}", "--out", str(tmp_path / "c.png")]
    for rate, why in [("arm=0", "positive rate"), ("arm=fast", "positive rate"), ("other=100", "no --run")]:
        with pytest.raises(SystemExit) as stopped:
            compare_runs([*run, "--rate", rate], capsys)
        err = capsys.readouterr().err.strip().splitlines()
        assert stopped.value.code == 2 and len(err) == 1 and why in err[0], err

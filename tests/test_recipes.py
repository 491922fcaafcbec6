"""--recipe: a whole training set-up under one name (a3c_extras/recipes.py), read by the command line without
training: the recipe's values over the course's defaults, the flags given beside it over the recipe, the
refusals in one line, --help, and a resumed run."""

import re
import subprocess
import sys

import pytest
from gymnasium.spaces import Discrete

from a3c_extras import cli
from a3c_extras.checkpoints import checkpoint, save_checkpoint
from a3c_extras.recipes import ABOUT, RECIPES, adapted, as_flags, flag, for_workers
from conftest import ROOT
from helpers import own_lines, params_from
from model import ActorCritic

THE_RUN = {"recipe", "run_dir"}  # what differs between two parsings of the same settings

TWO = ["--num-processes", "2"]  # the worker count the recipes' values are for; the default is the machine's cores
BREAKOUT = {  # the shipped agent's training from step 0 on 2 workers, as decided (docs/results.md, The recipe)
    "env_name": "ALE/Breakout-v5",
    "envs_per_worker": 16,
    "lr": 0.0004,
    "lr_decay_until": 80_000_000,
    "max_steps": 80_000_000,
    "life_loss": True,
    "fire_reset": True,
}


def settings(params) -> dict:
    return {k: v for k, v in vars(params).items() if k not in THE_RUN}


def test_breakout_sets_the_shipped_agent_s_training_and_leaves_the_rest_at_the_course_s_defaults():
    plain, recipe = params_from(TWO), params_from(["--recipe", "breakout", *TWO])
    assert recipe.recipe == "breakout" and plain.recipe is None
    assert {k: getattr(recipe, k) for k in BREAKOUT} == BREAKOUT
    assert recipe.lr_decay_from == 0 and recipe.rollout == "fast"  # the decay from step 0; the fast rollout
    changed = {k for k, v in settings(recipe).items() if v != getattr(plain, k)}
    assert changed == set(BREAKOUT)  # every other value is a plain run's


def test_breakout80_is_breakout_on_80x80_frames():
    recipe, frames80 = (
        params_from(["--recipe", "breakout80", *TWO]),
        params_from(["--recipe", "breakout", "--frame-size", "80", *TWO]),
    )
    assert recipe.frame_size == 80 and settings(recipe) == settings(frames80)


def test_a_plain_command_line_keeps_the_course_s_defaults():
    plain = params_from([])
    assert (plain.lr, plain.env_name, plain.envs_per_worker) == (0.0001, "BreakoutDeterministic-v4", 1)
    assert (plain.lr_decay_until, plain.max_steps, plain.life_loss, plain.fire_reset) == (0, 0, False, False)


@pytest.mark.parametrize("workers", [1, 2, 5, 16])
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_a_recipe_is_its_flags(name, workers):
    """--recipe NAME gives what its flags spelled out give: each of its settings is a flag of main.py."""
    assert set(ABOUT) == set(RECIPES)
    recipe = params_from(["--recipe", name, "--num-processes", str(workers)])
    assert settings(recipe) == settings(params_from(as_flags(name, workers)))


@pytest.mark.parametrize(
    "flags, name, value",
    [
        (["--lr", "0.0001"], "lr", 0.0001),
        (["--envs-per-worker", "1"], "envs_per_worker", 1),
        (["--env-name", "BreakoutDeterministic-v4"], "env_name", "BreakoutDeterministic-v4"),
        (["--lr-decay-until", "0"], "lr_decay_until", 0),
        (["--max-steps", "0"], "max_steps", 0),
        (["--no-life-loss"], "life_loss", False),
        (["--no-fire-reset"], "fire_reset", False),
    ],
)
def test_a_flag_given_beside_the_recipe_overrides_its_value(flags, name, value):
    for argv in (["--recipe", "breakout", *flags, *TWO], [*flags, *TWO, "--recipe", "breakout"]):  # either order
        params = params_from(argv)
        assert getattr(params, name) == value, argv
        rest = {k: v for k, v in BREAKOUT.items() if k != name}
        if name == "envs_per_worker":  # the rate goes with a worker's games: the course's for 1 game
            rest["lr"] = 0.0001
        assert {k: getattr(params, k) for k in rest} == rest, argv


def _main(*argv):
    return subprocess.run([sys.executable, "main.py", *argv], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_an_unknown_recipe_is_one_line_naming_the_known_ones_and_status_2():
    out = _main("--recipe", "pong")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = own_lines(out.stderr)
    assert len(lines) == 1 and "--recipe" in lines[0] and "'pong'" in lines[0], out.stderr
    assert all(f"'{name}'" in lines[0] for name in RECIPES), lines[0]


def test_help_lists_each_recipe_s_settings():
    text = re.sub(r"\s+", " ", cli.build_parser().format_help())
    for name, values in RECIPES.items():
        assert f"{name}, {ABOUT[name]}:" in text
        for setting, value in values.items():
            shown = flag(setting) if value is True else f"{flag(setting)}={value}"
            assert f" {shown} " in f"{text} ", shown


def _saved_run(tmp_path, counter, argv):
    """A run directory whose checkpoint is at `counter` agent steps, saved with the arguments of `argv`."""
    args = params_from([*argv, "--run-dir", str(tmp_path)])
    save_checkpoint(tmp_path / "checkpoint.pt", checkpoint(ActorCritic(1, Discrete(4)), None, counter, 1.0, None, args))
    return tmp_path


def test_a_run_started_with_a_recipe_resumes_with_it(tmp_path):
    """The saved arguments carry the recipe's values and its name; the recipe gives each sitting its step
    budget (a sitting's own, never saved); the flags given override both, as on any resume."""
    run = _saved_run(tmp_path, 1_000, ["--recipe", "breakout", "--max-steps", "5000", "--seed", "7", *TWO])
    for argv in (["--resume", str(run)], ["--resume", str(run), "--recipe", "breakout"]):
        resumed = params_from(argv)
        assert resumed.recipe == "breakout" and resumed.seed == 7, argv
        assert {k: getattr(resumed, k) for k in BREAKOUT} == BREAKOUT, argv
        assert resumed.lr_decay_from == 0  # the same line of the rate goes on
    assert params_from(["--resume", str(run), "--max-steps", "0"]).max_steps == 0
    assert params_from(["--resume", str(run), "--lr", "0.0002"]).lr == 0.0002


def test_a_run_started_without_a_recipe_resumes_without_one(tmp_path):
    run = _saved_run(tmp_path, 1_000, ["--lr", "0.0002"])
    resumed = params_from(["--resume", str(run)])
    assert resumed.recipe is None and resumed.max_steps == 0 and resumed.lr == 0.0002


def test_a_recipe_is_refused_on_a_run_started_without_it(tmp_path, capsys):
    run = _saved_run(tmp_path, 1_000, [])
    with pytest.raises(SystemExit) as exit:
        params_from(["--resume", str(run), "--recipe", "breakout"])
    assert exit.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"main.py: error: --recipe breakout sets up a new run from step 0; the run of {run} was started without "
        "a recipe and --resume keeps its saved arguments (a setting's own flag changes it)"
    ]


@pytest.mark.parametrize(
    "workers, games, lr",
    [(1, 16, 0.0004), (2, 16, 0.0004), (4, 8, 0.00028284), (8, 4, 0.0002), (16, 2, 0.00014142), (64, 1, 0.0001)],
)
def test_more_workers_share_the_recipe_s_games_and_take_the_rate_by_their_square_root(workers, games, lr):
    """With 16 workers the recipe's 16 games each at 4e-4 learnt nothing; 2 each at 1.4e-4 learnt
    (training/more-workers). 1 game at least (the course's 1e-4), 16 at most."""
    for name in RECIPES:
        params = params_from(["--recipe", name, "--num-processes", str(workers)])
        assert (params.envs_per_worker, params.lr) == (games, lr), name
        assert {k: v for k, v in vars(params).items() if k in RECIPES[name]} == for_workers(name, workers)
    given = params_from(["--recipe", "breakout", "--num-processes", str(workers), "--envs-per-worker", "4"])
    assert (given.envs_per_worker, given.lr) == (4, 0.0002)  # games given: the rate for them
    given = params_from(["--recipe", "breakout", "--num-processes", str(workers), "--lr", "0.001"])
    assert (given.envs_per_worker, given.lr) == (games, 0.001)  # a rate given: that rate


@pytest.mark.parametrize("workers, said", [(1, True), (2, False), (4, True), (16, True)])
def test_a_recipe_run_with_other_than_2_workers_says_the_values_it_runs_with(workers, said):
    params = params_from(["--recipe", "breakout", "--num-processes", str(workers)])
    line = adapted(params)
    assert (line is not None) == said
    if said:
        assert f"{params.envs_per_worker} games per worker at --lr {params.lr:g}" in line and "\n" not in line
        assert "as given" not in line
    assert adapted(params_from(["--num-processes", str(workers)])) is None  # the course's run: no recipe
    given = params_from(["--recipe", "breakout", "--num-processes", str(workers), "--lr", "0.001"])
    assert (adapted(given) is not None) == said
    if said:  # a rate given is said as such, beside the rule's
        assert f"at --lr 0.001 as given, the rule's {params.lr:g} (" in adapted(given)

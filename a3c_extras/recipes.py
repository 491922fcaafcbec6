"""Recipes: a whole training set-up under one name (python main.py --recipe NAME). Each is a dict of
main.py's settings by their Params names (a flag's name with - as _); the course's defaults hold for
every setting a recipe leaves out, and each flag given on the command line overrides the recipe's value.
docs/results.md (The recipe) says where these values come from."""

from a3c_extras.errors import plural

RECIPES = {
    # The shipped agent's training (docs/results.md), from step 0 in one run: the settings of its ten
    # sittings, with one decay of the learning rate to 0 over the whole run in place of its later decays.
    "breakout": {
        "env_name": "ALE/Breakout-v5",  # sticky actions, today's standard (the shipped agent's from 18.8M on)
        "envs_per_worker": 16,  # 16 games per worker: one batch shares the network's fixed costs (docs/speed.md)
        "lr": 0.0004,  # 4x the course's rate, about sqrt(16), for the 16 games' mean gradient
        "lr_decay_until": 80_000_000,  # the A3C paper's linear decay to 0, over the whole run
        "max_steps": 80_000_000,  # stop where the rate reaches 0: training at rate 0 changes nothing
        "life_loss": True,  # a lost life ends the training episode, as in the shipped agent's training
        "fire_reset": True,  # press FIRE at each start and lost life, as in the shipped agent's training
    },
}
# The first wall's winner (training/first-wall): the same run on 80x80 frames, the course's resize without its
# last shrink, where the ball is more than a pixel wide: 186.1 against the recipe's 59.9 at 14.9M agent steps.
RECIPES["breakout80"] = {**RECIPES["breakout"], "frame_size": 80}

ABOUT = {  # --help's words for each recipe
    "breakout": "the shipped agent's training, from step 0",
    "breakout80": "the same on 80x80 frames, the first wall's winner (a network other than the course's)",
}


MEASURED_WORKERS = 2  # every recipe's values are for 2 workers: their figures come from 2 (training/more-workers)


def for_workers(recipe: str, workers: int) -> dict:
    """The recipe's values for a run of `workers` workers. Its games in all (2 workers x 16) are shared among
    the workers, 1 at least and 16 at most each, at the rate for a worker's games (`rate`). With 16 workers of
    16 games at 4e-4 the recipe learnt nothing in 4.6M agent steps; 16 workers of 2 games at 1.4e-4 learn
    (training/more-workers)."""
    values = dict(RECIPES[recipe])
    games = values["envs_per_worker"]
    values["envs_per_worker"] = max(1, min(games, games * MEASURED_WORKERS // workers))
    values["lr"] = rate(recipe, values["envs_per_worker"])
    return values


def rate(recipe: str, games: int) -> float:
    """The recipe's learning rate for workers of `games` games: by the square root of the games a worker's
    update averages, as the recipe's 4e-4 for 16 games is the course's 1e-4 for 1 game."""
    values = RECIPES[recipe]
    return round(values["lr"] * (games / values["envs_per_worker"]) ** 0.5, 8)


def adapted(args) -> str | None:
    """The line a recipe's run with other than 2 workers prints at its start: the values it runs with."""
    if not getattr(args, "recipe", None) or args.num_processes == MEASURED_WORKERS:
        return None
    ruled = rate(args.recipe, args.envs_per_worker)
    given = "" if args.lr == ruled else f" as given, the rule's {ruled:g}"
    return (
        f"--recipe {args.recipe} with {plural(args.num_processes, 'worker')}: "
        f"{args.envs_per_worker} games per worker at --lr {args.lr:g}{given} (its values are for "
        f"{MEASURED_WORKERS} workers; with another count it shares their games and sets the rate by the square "
        "root of a worker's: training/more-workers/README.md)"
    )


def flag(name: str) -> str:
    """A setting's flag on main.py's command line: lr_decay_until -> --lr-decay-until."""
    return "--" + name.replace("_", "-")


def as_flags(recipe: str, workers: int = MEASURED_WORKERS) -> list[str]:
    """The recipe as the flags that give the same run with `workers` workers: what --recipe NAME stands for."""
    flags = ["--num-processes", str(workers)]
    for name, value in for_workers(recipe, workers).items():
        if value is True:
            flags.append(flag(name))
        elif value is not False:
            flags += [flag(name), str(value)]
    return flags


def describe(recipe: str) -> str:
    """The recipe in --help: its words, then its flags (--flag=value, which the help's wrapping keeps whole)."""
    settings = [flag(name) if value is True else f"{flag(name)}={value}" for name, value in RECIPES[recipe].items()]
    return f"{recipe}, {ABOUT[recipe]}: {' '.join(settings)}"

"""Recipes: a whole training set-up under one name (python main.py --recipe NAME). Each is a dict of
main.py's settings by their Params names (a flag's name with - as _); the course's defaults hold for
every setting a recipe leaves out, and each flag given on the command line overrides the recipe's value.
docs/results.md (The recipe) says where these values come from."""

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


MEASURED_WORKERS = 2  # every recipe's figures come from 2 workers; 16 learnt nothing (training/more-workers)


def caution(args) -> str | None:
    """The line a recipe's run with more workers than it was measured with prints at its start."""
    if not getattr(args, "recipe", None) or args.num_processes <= MEASURED_WORKERS:
        return None
    return (
        f"Caution: --recipe {args.recipe} was measured with {MEASURED_WORKERS} workers; --recipe breakout with 16 "
        "learnt nothing in 4.6M agent steps (training/more-workers/README.md). "
        f"--num-processes {MEASURED_WORKERS} runs it as measured."
    )


def flag(name: str) -> str:
    """A setting's flag on main.py's command line: lr_decay_until -> --lr-decay-until."""
    return "--" + name.replace("_", "-")


def as_flags(recipe: str) -> list[str]:
    """The recipe as the flags that give the same run: what --recipe NAME stands for."""
    flags = []
    for name, value in RECIPES[recipe].items():
        if value is True:
            flags.append(flag(name))
        elif value is not False:
            flags += [flag(name), str(value)]
    return flags


def describe(recipe: str) -> str:
    """The recipe in --help: its words, then its flags (--flag=value, which the help's wrapping keeps whole)."""
    settings = [flag(name) if value is True else f"{flag(name)}={value}" for name, value in RECIPES[recipe].items()]
    return f"{recipe}, {ABOUT[recipe]}: {' '.join(settings)}"

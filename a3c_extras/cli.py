"""The command line: the course's Params filled from flags, checked values, the run's own flags, one-line
errors; and the defaults of everything a learner's own Params does not have."""

import argparse
import importlib.util
import os
import re
import sys
import textwrap
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

from a3c_extras.atari import UnknownEnvError, resolve_env_id
from a3c_extras.checkpoints import CheckpointError, checkpoint_path, load_checkpoint
from a3c_extras.recipes import RECIPES, describe, for_workers, rate
from a3c_extras.sizes import COURSE_FRAME_SIZE, COURSE_LSTM_SIZE, FRAME_SIZES, resume_mismatch


def fail(message: str, status: int = 2):
    """The one way a command refuses bad input: one line on stderr, then exit (2 by default)."""
    print(message, file=sys.stderr, flush=True)
    sys.exit(status)


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """argparse prints the usage before its message; here a bad value gives the message alone."""
    parser.error = lambda message: fail(f"{parser.prog}: error: {message}")
    return parser


def number(kind, low=None, above=None):
    """An argparse type: `kind` parsed, then checked against a bound, with a one-line message."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got '{text}'")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        if above is not None and not value > above:
            raise argparse.ArgumentTypeError(f"must be greater than {above}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def env_id(text: str) -> str:
    """An argparse type: an environment id this project can make (legacy ids included)."""
    try:
        resolve_env_id(text)
    except UnknownEnvError as error:
        raise argparse.ArgumentTypeError(str(error))
    return text


def ray_address(text: str) -> str:
    """An argparse type: where the Ray cluster is (local, auto or HOST:PORT), checked without importing Ray."""
    if importlib.util.find_spec("ray") is None:  # Ray is in requirements-cluster.txt only
        raise argparse.ArgumentTypeError("Ray is not installed: pip install -r requirements-cluster.txt")
    if text in ("local", "auto"):
        return text
    if text.startswith("ray://"):
        raise argparse.ArgumentTypeError(
            "Ray Client addresses (ray://) are not supported: run main.py on a machine "
            "of the cluster, with auto or HOST:PORT"
        )
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected local, auto or HOST:PORT, got '{text}'")
    return text


def add_size_arguments(p: argparse.ArgumentParser) -> None:
    """The network's opt-in sizes, main.py's flags and the benchmarks' alike."""
    p.add_argument(
        "--frame-size",
        type=int,
        choices=FRAME_SIZES,
        default=COURSE_FRAME_SIZE,
        help="opt-in: 80 keeps the frames at the course's 80x80 resize, without its shrink to 42x42; the "
        "network's LSTM then reads 32 x 5 x 5 = 800 features instead of 288 (default: 42, the course's)",
    )
    p.add_argument(
        "--lstm-size",
        type=number(int, low=1),
        default=COURSE_LSTM_SIZE,
        metavar="N",
        help="opt-in: the LSTM's hidden size, which the actor and the critic read (default: 256, the course's)",
    )


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The flags the course did not have: budgets, resume, the record, videos, speed, departures, a cluster."""
    p.add_argument(
        "--max-steps",
        type=number(int, low=0),
        default=0,
        help="stop after this many agent steps in total, over all workers and sittings (0: no limit)",
    )
    p.add_argument(
        "--max-time",
        type=number(float, low=0),
        default=0,
        help="stop after this many seconds of this sitting (0: no limit)",
    )
    p.add_argument("--run-dir", default=None, help="where to keep the run (default: runs/<env>-<date-time>)")
    p.add_argument("--resume", default=None, metavar="PATH", help="checkpoint or run directory to continue")
    p.add_argument(
        "--save-interval", type=number(float, above=0), default=300, help="seconds between checkpoints (default: 300)"
    )
    p.add_argument(
        "--eval-interval",
        type=number(float, low=0),
        default=60,
        help="seconds the test process waits between episodes (default: 60)",
    )
    p.add_argument(
        "--status-interval", type=number(float, above=0), default=30, help="seconds between status lines (default: 30)"
    )
    p.add_argument(
        "--max-nonfinite",
        type=number(int, low=1),
        default=100,
        help="stop when this many updates in a row have a non-finite loss (default: 100)",
    )
    p.add_argument(
        "--best-window",
        type=number(int, low=1),
        default=5,
        metavar="N",
        help="best.pt: the weights when the mean of the last N evaluation episodes is the best so far "
        "(default: 5; 1 = the best single episode)",
    )
    p.add_argument(
        "--max-restarts",
        type=number(int, low=0),
        default=5,
        help="a worker or the test process that dies is replaced, unless it died more than this many "
        "times within --restart-window seconds: then the run stops with status 1 (default: 5)",
    )
    p.add_argument(
        "--restart-window",
        type=number(float, above=0),
        default=600,
        help="seconds over which --max-restarts counts (default: 600)",
    )
    p.add_argument(
        "--record-every",
        type=number(int, low=0),
        default=10,
        help="record the first evaluation and then every N-th to <run-dir>/videos (0: never)",
    )
    p.add_argument(
        "--no-tensorboard",
        action="store_true",
        help="write no TensorBoard charts (default: event files in the run directory)",
    )
    p.add_argument("--overlay", action="store_true", help="videos show the agent's input, policy and value")
    p.add_argument(
        "--rollout",
        choices=["fast", "classic"],
        default="fast",
        help="fast: the same update computed faster (default); classic: the course's loop as written",
    )
    p.add_argument(
        "--envs-per-worker",
        type=number(int, low=1),
        default=1,
        metavar="K",
        help="games each worker plays at once, acting in one batch and learning in one update from "
        "their K rollouts (default: 1, the course's A3C; needs --rollout fast)",
    )
    add_size_arguments(p)
    p.add_argument(
        "--no-memory-check",
        action="store_true",
        help="start the run even if its estimated memory (the workers, their games, the rollout) is more than "
        "this machine has available; by default such a run stops before it starts (a3c_extras/memory.py)",
    )
    p.add_argument(
        "--lr-decay-until",
        type=number(int, low=0),
        default=0,
        metavar="STEPS",
        help="the A3C paper's linear learning-rate decay: from --lr where it starts (step 0 of a new run, or the "
        "step this sitting resumes at) to 0 at this many agent steps in total; --resume keeps it "
        "(default: 0, the course's constant rate)",
    )
    p.add_argument("--life-loss", action="store_true", help="departure: a lost life ends the training episode")
    p.add_argument(
        "--no-life-loss",
        dest="life_loss",
        action="store_false",
        default=False,
        help="a training episode is the whole game (the default; turns off a recipe's or resumed run's --life-loss)",
    )
    p.add_argument("--fire-reset", action="store_true", help="departure: press FIRE at each start and lost life")
    p.add_argument(
        "--no-fire-reset",
        dest="fire_reset",
        action="store_false",
        default=False,
        help="no FIRE but the agent's own (the default; turns off a recipe's or resumed run's --fire-reset)",
    )
    p.add_argument(
        "--ray-address",
        type=ray_address,
        default=None,
        metavar="ADDRESS",
        help="train on every machine of a Ray cluster, --num-processes workers on each: auto (the cluster "
        "`ray start` joined this machine to), HOST:PORT of its head, or local (start one here)",
    )
    p.add_argument(
        "--sync-interval",
        type=number(float, above=0),
        default=2,
        help="with --ray-address: seconds between a machine's syncs with the global weights (default: 2)",
    )


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help, wrapped at spaces only: a flag such as --max-steps=80000000 stays whole."""

    def _split_lines(self, text, width):
        return textwrap.wrap(re.sub(r"\s+", " ", text).strip(), width, break_on_hyphens=False)


COURSE_FIELDS = ["lr", "gamma", "tau", "seed", "num_processes", "num_steps", "max_episode_length", "env_name"]


def build_parser(params=None) -> argparse.ArgumentParser:
    """main.py's command line: one flag per field of the course's Params (its defaults are the Params'
    values), the reference's later flags, then the run's own. Values are checked (`number`)."""

    def default(name, value):  # Params' value where it has the field (main.py's shows what we use)
        return getattr(params, name, value)

    p = argparse.ArgumentParser(
        prog="main.py", description="A3C: the course's Params from the command line", formatter_class=HelpFormatter
    )
    p.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default=None,
        help="a whole training set-up from step 0: the course's defaults but for the recipe's values, each "
        "of which its own flag given beside --recipe overrides; --resume keeps the run's recipe "
        "(a3c_extras/recipes.py). The values below are for 2 workers; with N workers each plays 32/N games "
        "(1 to 16) at the rate 1e-4 x the square root of its games: 16 workers, 2 games at 1.4e-4. "
        + "; ".join(describe(name) for name in sorted(RECIPES)),
    )
    course = p.add_argument_group("the course's Params")
    course.add_argument(
        "--lr",
        type=number(float, above=0),
        default=default("lr", 0.0001),
        metavar="LR",
        help="learning rate (default: %(default)s)",
    )
    course.add_argument(
        "--gamma",
        type=number(float, low=0),
        default=default("gamma", 0.99),
        metavar="G",
        help="discount factor for rewards (default: %(default)s)",
    )
    course.add_argument(
        "--tau",
        "--gae-lambda",
        dest="tau",
        type=number(float, low=0),
        default=default("tau", 1.0),
        metavar="L",
        help="lambda of generalised advantage estimation: the course's tau, the "
        "reference's later --gae-lambda (default: %(default)s)",
    )
    course.add_argument(
        "--seed",
        type=int,
        default=default("seed", 1),
        metavar="S",
        help="random seed; worker k uses seed + k (default: %(default)s)",
    )
    course.add_argument(
        "--num-processes",
        type=number(int, low=1),
        default=default("num_processes", cpu_count()),
        metavar="N",
        help="how many training processes to use (default: %(default)s)",
    )
    course.add_argument(
        "--num-steps",
        type=number(int, low=1),
        default=default("num_steps", 20),
        metavar="NS",
        help="number of forward steps in A3C (default: %(default)s)",
    )
    course.add_argument(
        "--max-episode-length",
        type=number(int, low=1),
        default=default("max_episode_length", 1000000),
        metavar="M",
        help="maximum length of an episode (default: %(default)s)",
    )
    course.add_argument(
        "--env-name",
        type=env_id,
        default=default("env_name", "BreakoutDeterministic-v4"),
        metavar="ENV",
        help="environment to train on (default: %(default)s)",
    )
    later = p.add_argument_group("the reference's later flags (the course wrote these values in train.py)")
    later.add_argument(
        "--entropy-coef",
        type=number(float, low=0),
        default=default("entropy_coef", 0.01),
        metavar="EC",
        help="entropy term coefficient (default: %(default)s)",
    )
    later.add_argument(
        "--value-loss-coef",
        type=number(float, low=0),
        default=default("value_loss_coef", 0.5),
        metavar="VC",
        help="value loss coefficient, on top of the 0.5 inside the loss (default: %(default)s)",
    )
    later.add_argument(
        "--max-grad-norm",
        type=number(float, above=0),
        default=default("max_grad_norm", 40),
        metavar="MGN",
        help="gradient clipping (default: %(default)s)",
    )
    later.add_argument("--no-shared", action="store_true", help="use an optimizer without shared statistics")
    add_run_arguments(p.add_argument_group("the run (not in the course)"))
    return one_line_errors(p)


RENAMED = {"gae_lambda": "tau"}  # checkpoints written before Params name the course's tau by the reference's name


def read_command_line(params, argv=None):
    """Fill the course's Params from the command line (sys.argv by default): every flag becomes an
    attribute. With --recipe, the recipe's values are the defaults; with --resume, the saved run's."""
    parser = build_parser(params)
    args = parser.parse_args(argv)
    if args.recipe and not args.resume:  # course's defaults < the recipe's values < the flags given
        parser.set_defaults(**for_workers(args.recipe, args.num_processes))  # its values for this many workers
        args = parser.parse_args(argv)
        parser.set_defaults(lr=rate(args.recipe, args.envs_per_worker))  # the rate for the games given, if given
        args = parser.parse_args(argv)
    args.lr_decay_from = 0  # the step where --lr-decay-until's line starts (schedule.py)
    if args.resume:
        try:
            data = load_checkpoint(args.resume)
        except CheckpointError as error:
            fail(f"{parser.prog}: error: {error}")
        saved = data["args"]
        saved = {RENAMED.get(k, k): v for k, v in saved.items()}
        # these belong to this sitting (the memory check, to this machine now)
        keep = {"resume", "run_dir", "max_steps", "max_time", "ray_address", "no_memory_check"}
        recipe = saved.get("recipe")  # the run's own: its settings are already among the saved arguments
        if args.recipe and args.recipe != recipe:
            started = f"with --recipe {recipe}" if recipe else "without a recipe"
            fail(
                f"{parser.prog}: error: --recipe {args.recipe} sets up a new run from step 0; the run of "
                f"{args.resume} was started {started} and --resume keeps its saved arguments (a setting's "
                "own flag changes it)"
            )
        parser.set_defaults(**{k: v for k, v in saved.items() if k not in keep and hasattr(args, k)})
        # The run's recipe goes on giving what belongs to each sitting: its step budget, where the rate is 0.
        parser.set_defaults(**{k: v for k, v in RECIPES.get(recipe, {}).items() if k in keep})
        args = parser.parse_args(argv)
        if args.run_dir is None:  # carry on in the same run directory
            args.run_dir = str(checkpoint_path(args.resume).parent)
        mismatch = resume_mismatch(args, data, args.resume)
        if mismatch:
            fail(f"{parser.prog}: error: {mismatch}")
        same_decay = args.lr_decay_until and args.lr_decay_until == saved.get("lr_decay_until")
        args.lr_decay_from = saved.get("lr_decay_from", 0) if same_decay else data["counter"]
        if args.lr_decay_until and args.lr_decay_until <= data["counter"]:
            fail(
                f"{parser.prog}: error: --lr-decay-until {args.lr_decay_until} is not beyond the "
                f"{data['counter']} agent steps the run has already played (--lr-decay-until 0: a constant --lr)"
            )
    if args.envs_per_worker > 1 and args.rollout == "classic":
        fail(
            f"{parser.prog}: error: --envs-per-worker {args.envs_per_worker} needs --rollout fast "
            "(the classic loop is the course's, one game per worker)"
        )
    if args.run_dir is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        args.run_dir = str(Path("runs") / f"{args.env_name.replace('/', '-')}-{stamp}")
    vars(params).update(vars(args))
    return params


def complete(params) -> SimpleNamespace:
    """A copy of `params` with every field it lacks at its default: a learner's own Params (the course's
    eight fields) runs train and test with the course's values and the run's defaults for the rest."""
    defaults = build_parser(params).parse_args([])
    values = {**vars(defaults), **{RENAMED.get(k, k): v for k, v in vars(params).items()}}
    return SimpleNamespace(**values)


def cpu_count() -> int:
    return os.cpu_count() or 1

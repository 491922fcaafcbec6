"""The command line beyond the course's flags: checked values, the run's own flags, one-line errors."""

import argparse
import os
import sys
from datetime import datetime
from pathlib import Path

from a3c_extras.atari import UnknownEnvError, resolve_env_id
from a3c_extras.checkpoints import CheckpointError, checkpoint_path, load_checkpoint


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
    if text in ("local", "auto"):
        return text
    if text.startswith("ray://"):
        raise argparse.ArgumentTypeError("Ray Client addresses (ray://) are not supported: run main.py on a machine "
                                         "of the cluster, with auto or HOST:PORT")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected local, auto or HOST:PORT, got '{text}'")
    return text


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The flags the course did not have: budgets, resume, the record, videos, speed, departures, a cluster."""
    p.add_argument("--max-steps", type=number(int, low=0), default=0,
                   help="stop after this many agent steps in total, over all workers and sittings (0: no limit)")
    p.add_argument("--max-time", type=number(float, low=0), default=0,
                   help="stop after this many seconds of this sitting (0: no limit)")
    p.add_argument("--run-dir", default=None, help="where to keep the run (default: runs/<env>-<date-time>)")
    p.add_argument("--resume", default=None, metavar="PATH", help="checkpoint or run directory to continue")
    p.add_argument("--save-interval", type=number(float, above=0), default=300,
                   help="seconds between checkpoints (default: 300)")
    p.add_argument("--eval-interval", type=number(float, low=0), default=60,
                   help="seconds the test process waits between episodes (default: 60)")
    p.add_argument("--status-interval", type=number(float, above=0), default=30,
                   help="seconds between status lines (default: 30)")
    p.add_argument("--max-nonfinite", type=number(int, low=1), default=100,
                   help="stop when this many updates in a row have a non-finite loss (default: 100)")
    p.add_argument("--max-restarts", type=number(int, low=0), default=5,
                   help="a worker or the test process that dies is replaced, unless it died more than this many "
                        "times within --restart-window seconds: then the run stops with status 1 (default: 5)")
    p.add_argument("--restart-window", type=number(float, above=0), default=600,
                   help="seconds over which --max-restarts counts (default: 600)")
    p.add_argument("--record-every", type=number(int, low=0), default=10,
                   help="record the first evaluation and then every N-th to <run-dir>/videos (0: never)")
    p.add_argument("--overlay", action="store_true", help="videos show the agent's input, policy and value")
    p.add_argument("--rollout", choices=["fast", "classic"], default="fast",
                   help="fast: the same update computed faster (default); classic: the course's loop as written")
    p.add_argument("--envs-per-worker", type=number(int, low=1), default=1, metavar="K",
                   help="games each worker plays at once, acting in one batch and learning in one update from "
                        "their K rollouts (default: 1, the course's A3C; needs --rollout fast)")
    p.add_argument("--life-loss", action="store_true", help="departure: a lost life ends the training episode")
    p.add_argument("--fire-reset", action="store_true", help="departure: press FIRE at each start and lost life")
    p.add_argument("--ray-address", type=ray_address, default=None, metavar="ADDRESS",
                   help="train on every machine of a Ray cluster, --num-processes workers on each: auto (the cluster "
                        "`ray start` joined this machine to), HOST:PORT of its head, or local (start one here)")
    p.add_argument("--sync-interval", type=number(float, above=0), default=2,
                   help="with --ray-address: seconds between a machine's syncs with the global weights (default: 2)")


def parse_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse the command line; with --resume, the saved run's arguments are the defaults."""
    one_line_errors(parser)
    args = parser.parse_args(argv)
    if args.resume:
        try:
            saved = load_checkpoint(args.resume)["args"]
        except CheckpointError as error:
            fail(f"{parser.prog}: error: {error}")
        keep = {"resume", "run_dir", "max_steps", "max_time", "ray_address"}  # these belong to this sitting
        parser.set_defaults(**{k: v for k, v in saved.items() if k not in keep and hasattr(args, k)})
        args = parser.parse_args(argv)
        if args.run_dir is None:  # carry on in the same run directory
            args.run_dir = str(checkpoint_path(args.resume).parent)
    if args.envs_per_worker > 1 and args.rollout == "classic":
        fail(f"{parser.prog}: error: --envs-per-worker {args.envs_per_worker} needs --rollout fast "
             "(the classic loop is the course's, one game per worker)")
    if args.run_dir is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        args.run_dir = str(Path("runs") / f"{args.env_name.replace('/', '-')}-{stamp}")
    return args


def cpu_count() -> int:
    return os.cpu_count() or 1

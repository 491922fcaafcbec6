"""A3C for Atari Breakout: one model and one optimizer in shared memory, a test process and N Hogwild
training workers around them.

    python main.py                       # Breakout, all CPU cores, until Ctrl-C
    python main.py --max-steps 5000000   # stop by itself after 5M agent steps
    python main.py --resume runs/<run>   # carry on from the last checkpoint
"""

import argparse
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per process, set before torch loads

import torch  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

import my_optim  # noqa: E402
from a3c_extras import cli, cluster, supervision  # noqa: E402
from envs import create_atari_env  # noqa: E402
from model import ActorCritic  # noqa: E402
from test import test  # noqa: E402
from train import train  # noqa: E402

# Training settings: the defaults of the reference's last version; every value is checked (cli.number)
parser = argparse.ArgumentParser(description="A3C")
parser.add_argument("--lr", type=cli.number(float, above=0), default=0.0001, metavar="LR",
                    help="learning rate (default: 0.0001)")
parser.add_argument("--gamma", type=cli.number(float, low=0), default=0.99, metavar="G",
                    help="discount factor for rewards (default: 0.99)")
parser.add_argument("--gae-lambda", type=cli.number(float, low=0), default=1.00, metavar="L",
                    help="lambda of generalised advantage estimation, 'tau' in the course (default: 1.00)")
parser.add_argument("--entropy-coef", type=cli.number(float, low=0), default=0.01, metavar="EC",
                    help="entropy term coefficient (default: 0.01)")
parser.add_argument("--value-loss-coef", type=cli.number(float, low=0), default=0.5, metavar="VC",
                    help="value loss coefficient, on top of the 0.5 inside the loss (default: 0.5)")
parser.add_argument("--max-grad-norm", type=cli.number(float, above=0), default=50, metavar="MGN",
                    help="gradient clipping (default: 50)")
parser.add_argument("--seed", type=int, default=1, metavar="S", help="random seed; worker k uses seed + k (default: 1)")
parser.add_argument("--num-processes", type=cli.number(int, low=1), default=cli.cpu_count(), metavar="N",
                    help="how many training processes to use (default: the CPU count)")
parser.add_argument("--num-steps", type=cli.number(int, low=1), default=20, metavar="NS",
                    help="number of forward steps in A3C (default: 20)")
parser.add_argument("--max-episode-length", type=cli.number(int, low=1), default=1000000, metavar="M",
                    help="maximum length of an episode (default: 1000000)")
parser.add_argument("--env-name", type=cli.env_id, default="BreakoutDeterministic-v4", metavar="ENV",
                    help="environment to train on (default: BreakoutDeterministic-v4)")
parser.add_argument("--no-shared", action="store_true", help="use an optimizer without shared statistics")
cli.add_run_arguments(parser)  # not in the course: budgets, resume, record, videos, speed, departures


def parse_args(argv=None):
    return cli.parse_args(parser, argv)  # with --resume, the saved run's arguments are the defaults


def shared_model_and_optimizer(args, env):
    shared_model = ActorCritic(env.observation_space.shape[0], env.action_space)
    shared_model.share_memory()

    if args.no_shared:
        optimizer = None
    else:
        optimizer = my_optim.SharedAdam(shared_model.parameters(), lr=args.lr)
        optimizer.share_memory()
    return shared_model, optimizer


def main(argv=None):
    args = parse_args(argv)
    if args.ray_address:  # not in the course: the same run on every machine of a Ray cluster (a3c_extras/cluster.py)
        return cluster.main(args, ActorCritic, my_optim.SharedAdam, create_atari_env, train, test)

    torch.manual_seed(args.seed)

    env = create_atari_env(args.env_name)
    shared_model, optimizer = shared_model_and_optimizer(args, env)
    run = supervision.Run(args, shared_model, optimizer)  # not in the course: resume, record, budgets, restarts

    processes = []

    # run.child(f): f in the child with the child's link to the run (stop, steps, events); a dead child is replaced
    p = mp.Process(target=run.child(test), args=(args.num_processes, args, shared_model))
    p.start()
    processes.append(p)

    for rank in range(0, args.num_processes):
        p = mp.Process(target=run.child(train), args=(rank, args, shared_model, optimizer))
        p.start()
        processes.append(p)
    return run.supervise(processes)  # the course joined them; here: until a budget or Ctrl-C


if __name__ == "__main__":
    sys.exit(main())

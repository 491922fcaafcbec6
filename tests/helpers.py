"""Shared pieces of the tests: start real A3C workers and play the shared model."""

import numpy as np
import torch
import torch.multiprocessing as mp

import main
import my_optim
from a3c_extras import cli, shared
from a3c_extras.evaluation import play_episode
from a3c_extras.supervision import WorkerLink
from catch import Catch, make_catch
from model import ActorCritic
from train import train


def params_from(argv=()):
    """main.py's Params as its command line fills them."""
    return cli.read_command_line(main.Params(), list(argv))


def shared_model_and_optimizer(params, env):
    """main.py's shared model and SharedAdam, in shared memory, for an environment's spaces."""
    return shared.shared_model_and_optimizer(params, env, ActorCritic, my_optim.SharedAdam)


def run_workers(args, num_workers: int, start_method: str = "fork", make_env=make_catch):
    """Train a fresh shared model on Catch with real `train` workers until args.max_steps."""
    torch.manual_seed(args.seed)
    shared_model, optimizer = shared_model_and_optimizer(args, Catch())
    ctx = mp.get_context(start_method)
    counter = ctx.Value("q", 0)
    workers = [ctx.Process(target=train, args=(rank, args, shared_model, optimizer),
                           kwargs={"link": WorkerLink(make_env=make_env, counter=counter)})
               for rank in range(num_workers)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=300)
    return shared_model, optimizer, counter.value, [p.exitcode for p in workers]


def greedy_return(model, episodes: int = 200, seed: int = 123) -> float:
    env = Catch()
    env.reset(seed=seed)
    model.eval()
    return float(np.mean([play_episode(env, model, 100)[0] for _ in range(episodes)]))

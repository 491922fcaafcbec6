"""Shared pieces of the tests: start real A3C workers and play the shared model."""

import numpy as np
import torch
import torch.multiprocessing as mp

import main
from a3c_extras.evaluation import play_episode
from a3c_extras.links import SharedCounts, WorkerLink
from catch import Catch, make_catch
from train import train


def run_workers(args, num_workers: int, start_method: str = "fork", make_env=make_catch):
    """Train a fresh shared model on Catch with real `train` workers until args.max_steps."""
    torch.manual_seed(args.seed)
    shared_model, optimizer = main.shared_model_and_optimizer(args, Catch())
    ctx = mp.get_context(start_method)
    shared = SharedCounts(ctx, num_workers)
    links = [WorkerLink.of_run(shared, rank, None, make_env=make_env, max_steps=args.max_steps)
             for rank in range(num_workers)]
    workers = [ctx.Process(target=train, args=(rank, args, shared_model, optimizer), kwargs={"link": links[rank]})
               for rank in range(num_workers)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=300)
    return shared_model, optimizer, shared.total(), [p.exitcode for p in workers]


def greedy_return(model, episodes: int = 200, seed: int = 123) -> float:
    env = Catch()
    env.reset(seed=seed)
    model.eval()
    return float(np.mean([play_episode(env, model, 100)[0] for _ in range(episodes)]))

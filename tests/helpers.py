"""Shared pieces of the tests: the lines a command wrote on stderr, real A3C workers, greedy play."""

import numpy as np
import torch
import torch.multiprocessing as mp

import main
from a3c_extras.evaluation import play_episode
from a3c_extras.supervision import WorkerLink
from catch import Catch, make_catch
from train import train


def run_workers(args, num_workers: int, start_method: str = "fork", make_env=make_catch):
    """Train a fresh shared model on Catch with real `train` workers until args.max_steps."""
    torch.manual_seed(args.seed)
    shared_model, optimizer = main.shared_model_and_optimizer(args, Catch())
    ctx = mp.get_context(start_method)
    counter, lock = ctx.Value("q", 0), ctx.Lock()
    workers = [ctx.Process(target=train, args=(rank, args, shared_model, counter, lock, optimizer),
                           kwargs={"link": WorkerLink(make_env=make_env)}) for rank in range(num_workers)]
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


def own_lines(stderr: str) -> list[str]:
    """The non-empty lines of a command's stderr, without the banner the ALE prints on loading (A.L.E, Stella)."""
    return [line for line in stderr.splitlines() if line and "A.L.E" not in line and "Stella" not in line]

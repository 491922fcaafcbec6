# Main code
"""The course's main.py: the settings in Params, one model and one optimizer in shared memory, a test
process and N Hogwild training workers around them. Lines marked #+ are not the course's
(docs/course.md says why).

    python main.py                       # Breakout, all CPU cores, until Ctrl-C
    python main.py --max-steps 5000000   # stop by itself after 5M agent steps
    python main.py --resume runs/<run>   # carry on from the last checkpoint
    python main.py --help                # every flag: each field of Params is one
"""

import os
import torch
import torch.multiprocessing as mp
from envs import create_atari_env
from model import ActorCritic
from train import train
from test import test
import my_optim
import sys  #+
from a3c_extras import cli, cluster, supervision  #+ what the course did not have (a3c_extras/)


# Gathering all the parameters (that we can modify to explore)
class Params():
    def __init__(self):
        self.lr = 0.0001
        self.gamma = 0.99
        self.tau = 1.
        self.seed = 1
        self.num_processes = os.cpu_count() or 1  #+ the course: 16, its machine's cores
        self.num_steps = 20
        self.max_episode_length = 1000000  #+ the course: 10000 (rollouts, not steps: see train.py)
        self.env_name = 'BreakoutDeterministic-v4'  #+ the course: 'Breakout-v0' (sticky actions, random frameskip)
        self.max_grad_norm = 50  #+ the course: 40, written in train.py


# Main run
if __name__ == '__main__':  #+ the spawn start method (macOS, Windows) imports this file in every child
    os.environ['OMP_NUM_THREADS'] = '1'
    params = Params()
    cli.read_command_line(params)  #+ every field is a flag: python main.py --lr 0.0004; --help lists them
    if params.ray_address:  #+ the same run on every machine of a Ray cluster (a3c_extras/cluster.py)
        sys.exit(cluster.main(params, ActorCritic, my_optim.SharedAdam, create_atari_env, train, test))  #+
    torch.manual_seed(params.seed)
    env = create_atari_env(params.env_name)
    shared_model = ActorCritic(env.observation_space.shape[0], env.action_space, params.frame_size, params.lstm_size)  #+ --frame-size, --lstm-size
    shared_model.share_memory()
    optimizer = my_optim.SharedAdam(shared_model.parameters(), lr=params.lr)
    optimizer.share_memory()
    if params.no_shared:  #+ --no-shared: each worker its own Adam, from the reference's later versions
        optimizer = None  #+
    run = supervision.Run(params, shared_model, optimizer)  #+ resume, the run's record, budgets, Ctrl-C
    processes = []
    p = mp.Process(target=run.test_process(test), args=(params.num_processes, params, shared_model))  #+ run.test_process(test)
    p.start()
    processes.append(p)
    for rank in range(0, params.num_processes):
        p = mp.Process(target=run.worker(train), args=(rank, params, shared_model, optimizer))  #+ run.worker(train)
        p.start()
        processes.append(p)
    sys.exit(run.supervise(processes))  #+ for p in processes: p.join(), and a clean end (a3c_extras/supervision.py)

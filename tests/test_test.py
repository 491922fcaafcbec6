import threading

import torch
from gymnasium.spaces import Discrete

import test as test_process  # the project's test.py, not Python's own test package
from a3c_extras.events import EvalEpisode
from a3c_extras.links import WorkerLink
from helpers import wait_until
from model import ActorCritic


def test_evaluation_never_changes_the_shared_weights(args):
    args.eval_interval, args.record_every = 0, 0
    shared_model = ActorCritic(1, Discrete(4))
    before = {k: v.clone() for k, v in shared_model.state_dict().items()}
    link = WorkerLink("test")
    thread = threading.Thread(
        target=test_process.test, args=(args.num_processes, args, shared_model), kwargs={"link": link}
    )
    thread.start()
    wait_until(lambda: len(link.events) >= 2 or not thread.is_alive(), 240, every=0.1)
    link.request_stop()
    thread.join(timeout=60)
    first, second = list(link.events)[:2]
    assert isinstance(first, EvalEpisode) and isinstance(second, EvalEpisode)  # an untrained agent may be cut short
    assert first.length > 0  # it played
    for key, value in shared_model.state_dict().items():
        assert torch.equal(value, before[key]), key  # bit-identical

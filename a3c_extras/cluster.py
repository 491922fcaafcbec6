"""One A3C run over every machine of a Ray cluster (main.py --ray-address): a Group of workers per machine, the
ParameterServer here (cluster_actors.py), and supervision.Run's loop as on one machine, the test process playing the
global weights. A group that dies is restarted by Ray and rejoins, unless the restart policy gives up on it or it stays
silent: then it is dropped and the others go on (docs/cluster.md). Ray is imported by connect(), not on import."""

import logging
import os
import socket
import time
from pathlib import Path
from statistics import median
from types import SimpleNamespace

import numpy as np
import torch
import torch.multiprocessing as mp

from a3c_extras import supervision
from a3c_extras.cli import fail
from a3c_extras.cluster_actors import Group, ParameterServer, copy_flat_, flat_weights
from a3c_extras.errors import first_line, plural, why_actor_died
from a3c_extras.events import GaveUp, MachineLost, MachineRejoined, Restarted
from a3c_extras.restarts import RestartPolicy
from a3c_extras.shared import shared_model_and_optimizer

LOOPBACK = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent  # the project, shipped to every machine of the cluster
# Media, weights and runs stay here; so do the four directories Ray leaves out by default (listed here instead,
# see connect, so that Ray does not warn about each of them at every start).
NOT_SHIPPED = ["/docs/", "/pretrained/", "/training/", "/tools/", "/runs/", ".git", ".venv", "venv", "__pycache__"]
START_TIMEOUT = 120  # seconds for every group to start (Ray may first start a Python worker on each machine)
CALL_TIMEOUT = 60  # seconds for a blocking call: a checkpoint's pull, a group's stop
# A group answers a poll within milliseconds. One silent this long is dropped: Ray itself declares a machine that
# stopped answering (frozen, cut off) dead only after its health checks fail, about a minute by default.
SILENCE_LIMIT = 10


class ClusterError(Exception):
    """The cluster cannot run this run; the message is one line meant for the user."""


def connect(address: str, run_dir: str | None = None):
    """ray.init for --ray-address, and the ray module: local starts a one-machine cluster on 127.0.0.1 with token
    authentication; auto and HOST:PORT join one, shipping the project's code to it; one out of reach is one line."""
    if address == "local":
        # Without this, Ray binds to the machine's network address even with the node IP set to loopback.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    elif address != "auto":
        check_reachable(address)  # ray.init would retry an unreachable address for minutes
    os.environ.setdefault("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", "")  # they are in NOT_SHIPPED
    import ray

    options = {"logging_level": logging.WARNING, "include_dashboard": False}
    if address == "local":
        # address="local": a new cluster even when one already runs on this machine (ray.init would join it)
        options |= {"address": "local", "_node_ip_address": LOOPBACK, "num_cpus": os.cpu_count() or 1}
    else:
        excludes = NOT_SHIPPED
        if run_dir is not None and Path(run_dir).resolve().is_relative_to(ROOT):  # the run directory stays here too
            excludes = [*excludes, "/" + Path(run_dir).resolve().relative_to(ROOT).as_posix() + "/"]
        options |= {"address": address, "runtime_env": {"working_dir": str(ROOT), "excludes": excludes}}
    try:
        ray.init(**options)
    except Exception as error:  # ConnectionError, an authentication error, a version mismatch...
        fail(f"main.py: error: cannot join the Ray cluster at {address}: {first_line(error)}")
    return ray


def check_reachable(address: str) -> None:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as error:
        fail(f"main.py: error: cannot reach the Ray cluster at {address}: {error.strerror or error}")


def on_node(node_id: str):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id, soft=False)


def training_nodes(ray) -> list[dict]:
    """The live nodes that have CPUs, this process's node first (it then holds machine 0)."""
    here = ray.get_runtime_context().get_node_id()
    nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
    return sorted(nodes, key=lambda n: n["NodeID"] != here)


def spaces_of(env) -> SimpleNamespace:
    """The env as shared_model_and_optimizer reads it (its two spaces), cheap to send to every machine."""
    return SimpleNamespace(observation_space=env.observation_space, action_space=env.action_space)


def actor_errors():
    """Ray's errors of a call to an actor that died or did not answer in time."""
    from ray.exceptions import GetTimeoutError, RayActorError

    return RayActorError, GetTimeoutError


class GlobalWeights:
    """The parameter server as the driver sees it: the global weights copied into `shared_model` (the test process
    plays them) at each answer, the run's steps (`total`) and each machine's of this sitting (`synced`)."""

    def __init__(self, ray, shared_model, optimizer, steps: int, machines: int, emit):
        here = ray.get_runtime_context().get_node_id()
        self.name = f"a3c-parameter-server-{os.getpid()}-{time.time_ns()}"  # how the groups find it
        statistics = optimizer.state_dict() if optimizer is not None else None
        self.server = (
            ray.remote(num_cpus=0)(ParameterServer)
            .options(scheduling_strategy=on_node(here), name=self.name)
            .remote(flat_weights(shared_model).numpy(), steps, machines, statistics)
        )
        self.ray, self.shared_model, self.emit = ray, shared_model, emit
        self.total, self.synced, self.asked, self.gone = steps, [0] * machines, None, False

    def pull(self, timeout: float | None = None) -> bool:
        """Take the server's answer if in (with a timeout: wait for one), ask again; False if the server is gone."""
        if self.gone:
            return False
        try:
            if timeout is not None:
                self.apply(self.ray.get(self.server.pull.remote(), timeout=timeout))
            elif self.asked is not None:
                if not self.ray.wait([self.asked], timeout=0)[0]:
                    return True
                self.apply(self.ray.get(self.asked))
        except actor_errors() as error:
            self.gone = True
            self.emit(GaveUp("the parameter server", why_actor_died(error)))
            return False
        self.asked = self.server.pull.remote()
        return True

    def apply(self, pulled) -> None:
        weights, self.total, self.synced = pulled
        copy_flat_(self.shared_model, torch.from_numpy(np.array(weights)))  # a copy: Ray's array is read-only


def start_groups(ray, args, spaces, names: list[str], nodes: list[dict], server: str, **group_options) -> list:
    """A Group actor on each node, ready: no CPU of Ray's count (its workers are its own processes), restarted by
    Ray as often as it takes (the run's restart policy decides when to give up on it)."""
    group = ray.remote(num_cpus=0, max_restarts=-1)(Group)
    groups = [
        group.options(scheduling_strategy=on_node(node["NodeID"])).remote(
            index=i,
            name=name,
            params=args,
            spaces=spaces,
            server=server,
            first_rank=i * args.num_processes,
            **group_options,
        )
        for i, (name, node) in enumerate(zip(names, nodes))
    ]
    for name, ready in zip(names, [g.ready.remote() for g in groups]):
        try:
            ray.get(ready, timeout=START_TIMEOUT)
        except actor_errors() as error:
            raise ClusterError(f"{name} could not start its workers: {why_actor_died(error)}")
    return groups


class Machines:
    """The driver's side of the cluster: a group per machine and the parameter server (`weights`), polled without
    waiting; their workers' events and each machine restarted, rejoined or lost go to `emit`."""

    def __init__(self, ray, args, spaces, shared_model, optimizer, steps: int, emit, nodes=None, **group_options):
        nodes = nodes or training_nodes(ray)
        if not nodes:
            raise ClusterError("the Ray cluster has no node with CPUs")
        self.ray, self.emit, self.optimizer = ray, emit, optimizer
        self.names = [f"machine {i} ({node['NodeManagerAddress']})" for i, node in enumerate(nodes)]
        self.weights = GlobalWeights(ray, shared_model, optimizer, steps, len(nodes), emit)
        self.groups = start_groups(ray, args, spaces, self.names, nodes, self.weights.name, **group_options)
        self.workers = len(nodes) * args.num_processes
        self.policy = RestartPolicy(args.max_restarts, args.restart_window)
        self.alive, self.lost, self.sync_ms = set(range(len(nodes))), [], [[] for _ in nodes]
        self.pending, self.restarting = {}, {}  # machine -> (its poll, asked when); machine -> when its group died
        self.pids = [None] * len(nodes)  # each group's process, as its last report gave it

    def poll(self) -> None:
        """Take the answers of every group that answered since the last call, and the server's; ask them again."""
        from ray.exceptions import ActorUnavailableError

        for i in self.alive - set(self.pending):
            self.pending[i] = (self.groups[i].poll.remote(), time.monotonic())
        refs = [ref for ref, _ in self.pending.values()]
        ready = self.ray.wait(refs, num_returns=len(refs), timeout=0)[0] if refs else []
        for i, (ref, asked) in list(self.pending.items()):
            if ref in ready:
                del self.pending[i]
                try:
                    self.take(i, self.ray.get(ref))
                except actor_errors() as error:
                    if i not in self.restarting:  # else: a call to the group that died, or before it is back
                        restarting = isinstance(error, ActorUnavailableError)
                        self.died(i, "its process ended" if restarting else why_actor_died(error))
            elif i in self.restarting:
                if time.monotonic() - self.restarting[i] > START_TIMEOUT:
                    self.lose(i, f"not back within {START_TIMEOUT} s of its restart")
            elif time.monotonic() - asked > SILENCE_LIMIT:
                self.lose(i, f"no answer for {SILENCE_LIMIT} s")
        self.weights.pull()

    def take(self, i: int, report) -> None:
        restarted = self.pids[i] is not None and report.pid != self.pids[i]  # Ray restarted the group
        if restarted and i not in self.restarting:  # its death went unnoticed: the calls went to its successor
            self.died(i, "its process ended")
            if i not in self.alive:
                return
        if i in self.restarting and (restarted or self.pids[i] is None):
            del self.restarting[i]
            self.emit(MachineRejoined(self.names[i]))
        self.pids[i], self.sync_ms[i] = report.pid, (self.sync_ms[i] + report.sync_ms)[-20:]
        for event in report.events:
            self.emit(event)

    def died(self, i: int, why: str) -> None:
        """A machine's group died: Ray starts it again, unless the restart policy gives up on it (then it is lost)."""
        gave_up = self.policy.died(self.names[i], why)
        if gave_up is not None:
            self.lose(i, gave_up)
            return
        self.restarting[i] = time.monotonic()
        self.emit(Restarted(self.names[i], why, self.policy.restarts[self.names[i]]))

    def lose(self, i: int, why: str) -> None:
        """A machine's group is gone: drop it; the others go on, or the run stops when none is left."""
        self.alive.discard(i)
        self.pending.pop(i, None)
        self.ray.kill(self.groups[i])  # if it was only silent: it must not train on alone
        self.lost.append(i)
        left = f"the run goes on with {len(self.alive)} of {len(self.names)} machines" if self.alive else "none is left"
        self.emit(MachineLost(self.names[i], why, left))
        if not self.alive:
            self.emit(GaveUp("every machine", "lost (" + "; ".join(self.names[j] for j in self.lost) + ")"))

    def pull_for_checkpoint(self) -> bool:
        """For a checkpoint: the global weights and steps, a machine's Adam statistics; False without a server."""
        for i in sorted(self.alive):
            try:
                state = self.ray.get(self.groups[i].optimizer_state.remote(), timeout=CALL_TIMEOUT)
            except actor_errors():
                continue
            if self.optimizer is not None and state:
                self.optimizer.load_state_dict(state)
            break
        return self.weights.pull(timeout=CALL_TIMEOUT)

    def stop(self) -> None:
        """Stop every group (each syncs its last updates first) and take what they still had to tell."""
        stops = {i: self.groups[i].stop.remote() for i in self.alive}
        for i, ref in stops.items():
            try:
                if i in self.pending:  # answered before the stop: the actor runs calls in order
                    self.take(i, self.ray.get(self.pending.pop(i)[0], timeout=CALL_TIMEOUT))
                self.take(i, self.ray.get(ref, timeout=CALL_TIMEOUT))
            except actor_errors() as error:
                self.lose(i, why_actor_died(error))

    def describe(self, seconds: float) -> str:
        """Per machine: its synced steps/s over `seconds`, its syncs' round trip."""
        parts = []
        for i, name in enumerate(self.names):
            sync = f", sync {median(self.sync_ms[i]):.0f} ms" if self.sync_ms[i] else ""
            rate = f"{self.weights.synced[i] / max(seconds, 1e-9):,.0f} steps/s{sync}"
            parts.append(f"{name} {'lost' if i in self.lost else rate}")
        return ", ".join(parts)

    def shutdown(self) -> None:
        for actor in [*self.groups, self.weights.server]:
            self.ray.kill(actor)


class ClusterRun(supervision.Run):
    """supervision.Run over the machines: the same jobs and record, of the global weights and the server's count."""

    def __init__(self, args, shared_model, optimizer):
        super().__init__(args, shared_model, optimizer, ctx=mp.get_context("spawn"))  # no fork beside Ray's threads
        self.machines = None

    def headline(self) -> str:
        machines, workers = len(self.machines.names), self.args.num_processes
        where = f"{plural(machines, 'machine')} x {plural(workers, 'worker')}"
        return super().headline().replace(f"{workers} workers", where, 1)

    def tick(self) -> None:
        super().tick()
        self.machines.poll()  # the test process plays the global weights
        self.counts.base.value = self.machines.weights.total  # the run's count (the test process adds none)

    def stop_sources(self) -> None:
        self.machines.stop()  # first: the groups' last syncs
        super().stop_sources()

    def save(self, steps=None, final: bool = False) -> bool:
        if self.machines.pull_for_checkpoint():
            self.counts.base.value = self.machines.weights.total
        return super().save(steps, final)

    def describe(self) -> str:
        return self.machines.describe(self.sitting_seconds())


def main(args, model_class, optimizer_class, create_atari_env, train, test) -> int:
    """main.py's main on a cluster: the same run, the same record, one group of workers per machine."""
    if args.no_shared:
        fail("main.py: error: --no-shared is not supported with --ray-address (a checkpoint keeps SharedAdam's state)")
    ray = connect(args.ray_address, args.run_dir)
    run = None
    try:
        torch.manual_seed(args.seed)
        env = create_atari_env(args.env_name)
        shared_model, optimizer = shared_model_and_optimizer(args, env, model_class, optimizer_class)
        run = ClusterRun(args, shared_model, optimizer)
        options = {"model_class": model_class, "optimizer_class": optimizer_class, "train": train}
        try:  # from the weights and statistics the run starts from
            run.machines = Machines(
                ray, run.args, spaces_of(env), shared_model, optimizer, run.start_steps, run.emit, **options
            )
        except ClusterError as error:
            fail(f"main.py: error: {error}")
        print(f"Machines: {', '.join(run.machines.names)}; each syncs every {args.sync_interval:g} s", flush=True)
        workers = run.machines.workers
        test_process = mp.get_context("spawn").Process(
            target=run.test_process(test, rank=workers), args=(workers, args, shared_model)
        )
        test_process.start()
        return run.supervise([test_process])
    finally:
        if run is not None and run.machines is not None:
            run.machines.shutdown()
        ray.shutdown()

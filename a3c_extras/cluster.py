"""One A3C run over every machine of a Ray cluster: python main.py --ray-address auto (or HOST:PORT, or local).

Hogwild inside each machine, Downpour-style syncs between machines (cluster_actors.py): a Group actor per machine runs
--num-processes `train` workers on that machine's shared model; a ParameterServer actor here holds the global weights.
This process (the driver) runs supervision.Run's loop as on one machine, with the test process playing the global
weights, and polls every group twice a second without waiting. A worker that dies is replaced inside its group; a
group that dies is started again by Ray and rejoins with the global weights, unless the restart policy gives up on
it or it stays silent (SILENCE_LIMIT; START_TIMEOUT while it restarts): then it is dropped and the others go on, its
work up to its last sync kept. The run stops with status 1 when no machine is left or the parameter server dies.
Ray is imported by connect(), so importing this module loads no Ray."""

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
from a3c_extras.errors import first_line, why_actor_died
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
    """ray.init for --ray-address and the ray module. local starts a one-machine cluster in this process, every
    socket on 127.0.0.1 and token authentication on; auto and HOST:PORT join a running one, whose nodes then run
    this project's code as shipped from here. An unreachable cluster is refused in one line (exit status 2)."""
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
        options |= {"address": address, "runtime_env": {"working_dir": str(ROOT), "excludes": not_shipped(run_dir)}}
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


def not_shipped(run_dir: str | None) -> list[str]:
    """What of the project not to ship to the machines: the run directory too, when it lies inside."""
    excludes = list(NOT_SHIPPED)
    if run_dir is not None:
        try:
            excludes.append("/" + Path(run_dir).resolve().relative_to(ROOT).as_posix() + "/")
        except ValueError:
            pass  # outside the project
    return excludes


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
    """The driver's view of the parameter server: the global weights, copied into `shared_model` (the test process
    plays them) as often as the server answers, and its step counts: `total`, the run's, and `synced`, each machine's
    share of this sitting. A server that does not answer ends the run (GaveUp)."""

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
        """Take the server's last answer if it is in (with a timeout: wait for a new one), and ask again; False
        if the server is gone."""
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
    """A Group actor on each node, started and ready. A group takes no CPU from Ray's count (its workers are
    processes of its own, which Ray does not schedule); the node affinity puts one on each machine. Ray restarts a
    group whose process died, as often as it takes: the run's restart policy decides when to give up on it."""
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
    """The driver's side of the cluster: one group per machine and the parameter server (`weights`), polled without
    waiting. What they tell goes to `emit` with the rest of the run's events: their workers' events, and each
    machine restarted (the restart policy, as for a child on one machine), rejoined or lost."""

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
        """The global weights and steps, and one machine's SharedAdam statistics into the driver's optimizer, for a
        checkpoint; False if the server is gone (the driver's copies keep what they last had)."""
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
        """Per machine: steps/s over `seconds` (as far as its work reached the server), its syncs' round trip."""
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

    def start_machines(self, ray, env, nodes, **group_options) -> int:
        """One group per machine, from the weights and statistics this run starts from; returns the workers."""
        spaces = spaces_of(env)
        args, start = self.args, self.start_steps
        self.machines = Machines(
            ray, args, spaces, self.shared_model, self.optimizer, start, self.emit, nodes=nodes, **group_options
        )
        print(f"Machines: {', '.join(self.machines.names)}; each syncs every {args.sync_interval:g} s", flush=True)
        return self.machines.workers

    def headline(self) -> str:
        machines, workers = len(self.machines.names), self.args.num_processes
        where = f"{machines} machine{'s' * (machines != 1)} x {workers} worker{'s' * (workers != 1)}"
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
        fail(
            "main.py: error: --no-shared is not supported with --ray-address (a checkpoint keeps a SharedAdam's "
            "statistics)"
        )
    ray = connect(args.ray_address, args.run_dir)
    run = None
    try:
        torch.manual_seed(args.seed)
        env = create_atari_env(args.env_name)
        shared_model, optimizer = shared_model_and_optimizer(args, env, model_class, optimizer_class)
        run = ClusterRun(args, shared_model, optimizer)
        try:
            options = {"model_class": model_class, "optimizer_class": optimizer_class, "train": train}
            workers = run.start_machines(ray, env, training_nodes(ray), **options)
        except ClusterError as error:
            fail(f"main.py: error: {error}")
        test_process = mp.get_context("spawn").Process(
            target=run.test_process(test, rank=workers), args=(workers, args, shared_model)
        )
        test_process.start()
        return run.supervise([test_process])
    finally:
        if run is not None and run.machines is not None:
            run.machines.shutdown()
        ray.shutdown()

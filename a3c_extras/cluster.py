"""One A3C run over every machine of a Ray cluster (main.py --ray-address): a Group of workers per machine
(cluster_actors.py), the global weights here, and supervision.Run's loop as on one machine, the test process playing
them. A group that dies is restarted by Ray and rejoins, unless the restart policy gives up on it or it stays
silent: then it is dropped and the others go on (docs/cluster.md). Ray is imported by connect(), not on import."""

import logging
import math
import os
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.multiprocessing as mp

from a3c_extras import supervision
from a3c_extras.cli import fail
from a3c_extras.cluster_actors import Group, add_flat_, flat_weights, from_ray
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
CALL_TIMEOUT = 60  # seconds for a blocking call: a checkpoint's statistics, a group's stop
# A group answers a poll within milliseconds. One silent this long is dropped: Ray itself declares a machine that
# stopped answering (frozen, cut off) dead only after its health checks fail, about a minute by default.
SILENCE_LIMIT = 10


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


def training_nodes(ray) -> list[dict]:
    """The live nodes that have CPUs, this process's node first (it then holds machine 0)."""
    here = ray.get_runtime_context().get_node_id()
    nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
    return sorted(nodes, key=lambda n: n["NodeID"] != here)


def spaces_of(env) -> SimpleNamespace:
    """The env as shared_model_and_optimizer reads it (its two spaces), cheap to send to every machine."""
    return SimpleNamespace(observation_space=env.observation_space, action_space=env.action_space)


def actor_errors():
    """Ray's errors of a call to an actor that died, did not answer in time, or raised (RayTaskError)."""
    from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

    return RayActorError, GetTimeoutError, RayTaskError


def start_groups(ray, args, spaces, names: list[str], nodes: list[dict], **group_options) -> tuple[list, list]:
    """A Group actor on each node, and its process once it started: no CPU of Ray's count (its workers are its own
    processes), restarted by Ray as often as it takes (the run's restart policy decides when to give up on it)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    group = ray.remote(num_cpus=0, max_restarts=-1)(Group)
    groups = [
        group.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
            index=i, name=name, params=args, spaces=spaces, **group_options
        )
        for i, (name, node) in enumerate(zip(names, nodes))
    ]
    pids = []
    for name, ready in zip(names, [g.ready.remote() for g in groups]):
        try:
            pids.append(ray.get(ready, timeout=START_TIMEOUT))
        except actor_errors() as error:
            fail(f"main.py: error: {name} could not start its group of workers: {why_actor_died(error)}")
    return groups, pids


class Machines:
    """The driver's side of the cluster: a group per machine, polled without waiting, and the global weights (the
    run's shared model, which the test process plays) with the run's step count (`total`), which each group's syncs
    add to; their workers' events and each machine restarted, rejoined or lost go to `emit`."""

    def __init__(self, ray, args, spaces, shared_model, optimizer, steps: int, emit, **group_options):
        nodes = training_nodes(ray)
        if not nodes:
            fail("main.py: error: the Ray cluster has no node with CPUs")
        self.ray, self.emit, self.shared_model, self.optimizer = ray, emit, shared_model, optimizer
        self.names = [f"machine {i} ({node['NodeManagerAddress']})" for i, node in enumerate(nodes)]
        self.groups, self.pids = start_groups(ray, args, spaces, self.names, nodes, **group_options)
        # What every group starts from at its first sync, held here: a restarted group needs it again.
        self.statistics = ray.put(optimizer.state_dict() if optimizer is not None else {})
        self.workers, self.interval = len(nodes) * args.num_processes, args.sync_interval
        self.policy = RestartPolicy(args.max_restarts, args.restart_window)
        self.total, self.synced = steps, [0] * len(nodes)
        self.alive, self.lost, self.synced_at = set(range(len(nodes))), [], [-math.inf] * len(nodes)
        self.pending, self.restarting = {}, {}  # machine -> (its poll, asked when); machine -> when its group died

    def poll(self) -> None:
        """Take the answers of every group that answered since the last call; ask them again, with the global weights
        those due a sync."""
        from ray.exceptions import ActorUnavailableError, RayTaskError

        refs = [ref for ref, _ in self.pending.values()]
        ready = self.ray.wait(refs, num_returns=len(refs), timeout=0)[0] if refs else []
        for i, (ref, asked) in list(self.pending.items()):
            if ref in ready:
                del self.pending[i]
                try:
                    self.take(i, self.ray.get(ref))
                except RayTaskError as error:  # the group raised, and lives on: a restart would not come
                    self.lose(i, why_actor_died(error))
                except actor_errors() as error:
                    if i not in self.restarting:  # else: a call to the group that died, or before it is back
                        restarting = isinstance(error, ActorUnavailableError)
                        self.died(i, "its process ended" if restarting else why_actor_died(error))
            elif i in self.restarting:
                if time.monotonic() - self.restarting[i] > START_TIMEOUT:
                    self.lose(i, f"not back within {START_TIMEOUT} s of its restart")
            elif time.monotonic() - asked > SILENCE_LIMIT:
                self.lose(i, f"no answer for {SILENCE_LIMIT} s")
        now, weights = time.monotonic(), None
        for i in self.alive - set(self.pending):
            if now - self.synced_at[i] < self.interval:
                self.pending[i] = (self.groups[i].poll.remote(None, self.total), now)
                continue
            if weights is None:
                weights = self.ray.put(flat_weights(self.shared_model).numpy())
            first = self.synced_at[i] == -math.inf  # the group's first sync, or its successor's
            self.pending[i] = (self.groups[i].poll.remote(weights, self.total, self.statistics if first else None), now)
            self.synced_at[i] = now

    def take(self, i: int, report) -> None:
        """A group's answer: its delta (after a sync) into the global weights, its steps, its events."""
        if report.pid != self.pids[i]:  # Ray restarted the group
            if i not in self.restarting:  # its death went unnoticed: the calls went to its successor
                self.died(i, "its process ended")
            if i not in self.alive:
                return
            del self.restarting[i]
            self.pids[i], self.synced_at[i] = report.pid, -math.inf  # its next poll brings all it starts from
            self.emit(MachineRejoined(self.names[i]))
        if report.delta is not None:
            add_flat_(self.shared_model, from_ray(report.delta))
            self.total, self.synced[i] = self.total + report.steps, self.synced[i] + report.steps
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

    def pull_statistics(self) -> None:
        """For a checkpoint: the Adam statistics of the first machine still running."""
        for i in sorted(self.alive):
            try:
                state = self.ray.get(self.groups[i].optimizer_state.remote(), timeout=CALL_TIMEOUT)
            except actor_errors():
                continue
            if self.optimizer is not None and state:
                self.optimizer.load_state_dict(state)
            return

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
        """Per machine: its synced steps/s over `seconds`."""
        rates = [f"{synced / max(seconds, 1e-9):,.0f} steps/s" for synced in self.synced]
        return ", ".join(f"{name} {'lost' if i in self.lost else rates[i]}" for i, name in enumerate(self.names))

    def shutdown(self) -> None:
        for actor in self.groups:
            self.ray.kill(actor)


class ClusterRun(supervision.Run):
    """supervision.Run over the machines: the same jobs and record, of the global weights and the machines' count."""

    def __init__(self, args, shared_model, optimizer):
        super().__init__(args, shared_model, optimizer, ctx=mp.get_context("spawn"))  # no fork beside Ray's threads
        self.machines = None

    def headline(self) -> str:
        machines, workers = len(self.machines.names), self.args.num_processes
        where = f"{plural(machines, 'machine')} x {plural(workers, 'worker')}"
        return super().headline().replace(f"{workers} workers", where, 1)

    def tick(self) -> None:
        super().tick()
        self.machines.poll()  # the global weights, which the test process plays, move
        self.counts.base.value = self.machines.total  # the run's count (the test process adds none)

    def stop_sources(self) -> None:
        self.machines.stop()  # first: the groups' last syncs
        super().stop_sources()

    def save(self, steps=None, final: bool = False) -> bool:
        self.machines.pull_statistics()
        self.counts.base.value = self.machines.total  # the last syncs' steps too, once the machines stopped
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
        # from the weights and statistics the run starts from (resumed, if it was)
        run.machines = Machines(
            ray, run.args, spaces_of(env), shared_model, optimizer, run.start_steps, run.emit, **options
        )
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

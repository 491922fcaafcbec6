"""One A3C run over every machine of a Ray cluster: python main.py --ray-address auto (or HOST:PORT, or local).

Hogwild inside each machine, Downpour-style syncs between machines (cluster_actors.py): one Group actor per machine
runs --num-processes `train` workers on that machine's shared model, and a ParameterServer actor on this machine holds
the global weights. This process (the driver) does what supervision.Run does on one machine: resume, budgets,
checkpoints, progress.csv, the curve and the status line, and it runs the test process, which plays the global
weights. Twice a second it asks every group, without waiting, for its games, its steps and its health.

Faults: a worker that dies inside a group is replaced there, as on one machine. A machine whose group dies (its
process killed) is started again by Ray and rejoins with the global weights, with a line on stderr; one that died
more than --max-restarts times within --restart-window seconds, or that stays silent for SILENCE_LIMIT seconds (or
START_TIMEOUT while it restarts: the machine down), is dropped, and the run goes on with the others: what that
machine learnt up to its last sync is in the global weights, at most one sync interval of its work is lost. The
run stops with a checkpoint and exit status 1 when no machine is left, when the parameter server dies, or when a
worker dies too often inside a group.

Ray is imported by connect(), so importing this module loads no Ray.
"""

import logging
import os
import socket
import sys
import time
from collections import deque
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


class Machines:
    """The driver's side of the cluster: the parameter server and one group per machine, polled without waiting."""

    def __init__(
        self,
        ray,
        args,
        spaces,
        shared_model,
        optimizer,
        steps: int,
        *,
        model_class,
        optimizer_class,
        train,
        make_env=None,
        nodes=None,
    ):
        from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

        self.ray, self.args, self.start_steps = ray, args, steps
        self.actor_errors = (RayActorError, GetTimeoutError)
        self.restarting_error = ActorUnavailableError
        nodes = training_nodes(ray) if nodes is None else nodes
        if not nodes:
            raise ClusterError("the Ray cluster has no node with CPUs")
        self.names = [f"machine {i} ({node['NodeManagerAddress']})" for i, node in enumerate(nodes)]
        here = ray.get_runtime_context().get_node_id()
        server_name = f"a3c-parameter-server-{os.getpid()}-{time.time_ns()}"
        self.server = (
            ray.remote(num_cpus=0)(ParameterServer)
            .options(scheduling_strategy=on_node(here), name=server_name)
            .remote(
                flat_weights(shared_model).numpy(),
                steps,
                len(nodes),
                optimizer.state_dict() if optimizer is not None else None,
            )
        )
        # Each group takes the weights and statistics from the server. Groups take no CPU from Ray's count: their
        # workers are processes of their own, which Ray does not schedule; the node affinity puts one on each machine.
        # Ray restarts a group whose process died, as often as it takes; this driver counts the deaths and drops a
        # group that died more than --max-restarts times within --restart-window seconds, as on one machine.
        group = ray.remote(num_cpus=0, max_restarts=-1)(Group)
        self.groups = [
            group.options(scheduling_strategy=on_node(node["NodeID"])).remote(
                index=i,
                name=self.names[i],
                params=args,
                spaces=spaces,
                server=server_name,
                model_class=model_class,
                optimizer_class=optimizer_class,
                train=train,
                first_rank=i * args.num_processes,
                make_env=make_env,
            )
            for i, node in enumerate(nodes)
        ]
        self.workers = len(nodes) * args.num_processes
        self.alive = set(range(len(nodes)))
        self.steps_of = [0] * len(nodes)  # each machine's steps in this sitting
        self.sync_ms = [[] for _ in nodes]  # recent round trips of each machine's syncs
        self.pending = {}  # machine -> (its poll in flight, when it was asked)
        self.pending_pull = None
        self.failure = None  # (name, why) that ends the run
        self.lost = {}
        self.deaths = [deque() for _ in nodes]  # when each machine's group died, within the restart window
        self.restarting = {}  # machine -> when its group died, until it answers again
        self.pids = [None] * len(nodes)  # each group's process, as its last report gave it
        self.restarts = [0] * len(nodes)
        for i, ready in enumerate([g.ready.remote() for g in self.groups]):
            try:
                ray.get(ready, timeout=START_TIMEOUT)
            except self.actor_errors as error:
                raise ClusterError(f"{self.names[i]} could not start its workers: {why_actor_died(error)}")

    def steps(self) -> int:
        return self.start_steps + sum(self.steps_of)

    def take(self, i: int, report, handle) -> None:
        restarted = self.pids[i] is not None and report.pid != self.pids[i]  # Ray restarted the group
        if restarted and i not in self.restarting:  # its death went unnoticed: the calls went to its successor
            self.died(i, "its process ended", handle)
            if i not in self.alive:
                return
        if i in self.restarting and (restarted or self.pids[i] is None):
            del self.restarting[i]
            self.steps_of[i] = report.steps  # counting again from its steps that reached the server
            print(f"main.py: {self.names[i]} rejoined with the global weights", file=sys.stderr, flush=True)
        self.pids[i] = report.pid
        for event in report.events:
            handle(event)
        self.steps_of[i] = max(self.steps_of[i], report.steps)
        self.sync_ms[i] = (self.sync_ms[i] + report.sync_ms)[-20:]
        if report.dead and self.failure is None:
            self.failure = report.dead

    def died(self, i: int, why: str, handle) -> None:
        """A machine's group died: Ray starts it again, unless it died too often (then it is dropped)."""
        now = time.time()
        deaths = self.deaths[i]
        deaths.append(now)
        while deaths and deaths[0] < now - self.args.restart_window:
            deaths.popleft()
        if len(deaths) > self.args.max_restarts:
            self.lose(i, f"{why} (died {len(deaths)} times within {self.args.restart_window:g} s)")
            return
        self.restarting[i] = now
        self.restarts[i] += 1
        handle(("restart", self.names[i], why, self.restarts[i]))

    def lose(self, i: int, why: str) -> None:
        """A machine's group is gone: drop it; the others go on, or the run stops when none is left."""
        self.alive.discard(i)
        self.pending.pop(i, None)
        self.ray.kill(self.groups[i])  # if it was only silent: it must not train on alone
        self.lost[i] = why
        left = f"the run goes on with {len(self.alive)} of {len(self.names)} machines" if self.alive else "none is left"
        print(f"main.py: {self.names[i]} lost: {self.lost[i]}; {left}", file=sys.stderr, flush=True)
        if not self.alive and self.failure is None:
            self.failure = ("every machine", "lost (" + "; ".join(self.names[j] for j in self.lost) + ")")

    def poll(self, handle) -> None:
        """Hand `handle` the events of every group that answered since the last call; ask those again."""
        for i in self.alive:
            if i not in self.pending:
                self.pending[i] = (self.groups[i].poll.remote(), time.time())
        if not self.pending:
            return
        refs = [ref for ref, _ in self.pending.values()]
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        for i, (ref, asked) in list(self.pending.items()):
            if ref in ready:
                del self.pending[i]
                try:
                    self.take(i, self.ray.get(ref), handle)
                except self.actor_errors as error:
                    if i not in self.restarting:  # else: a call to the group that died, or before it is back
                        restarting = isinstance(error, self.restarting_error)
                        self.died(i, "its process ended" if restarting else why_actor_died(error), handle)
            elif i in self.restarting:
                if time.time() - self.restarting[i] > START_TIMEOUT:
                    self.lose(i, f"not back within {START_TIMEOUT} s of its restart")
            elif time.time() - asked > SILENCE_LIMIT:
                self.lose(i, f"no answer for {SILENCE_LIMIT} s")

    def refresh(self, shared_model) -> None:
        """Copy the global weights into shared_model when the last pull has answered; ask again."""
        if self.pending_pull is not None:
            ready, _ = self.ray.wait([self.pending_pull], timeout=0)
            if not ready:
                return
            try:
                self._apply(self.ray.get(self.pending_pull), shared_model)
            except self.actor_errors as error:
                self._server_died(error)
                return
        self.pending_pull = self.server.pull.remote()

    def _apply(self, pulled, shared_model) -> int:
        weights, total, synced_steps = pulled
        copy_flat_(shared_model, torch.from_numpy(np.array(weights)))  # a copy: Ray's array is read-only
        for i, synced in enumerate(synced_steps):
            # A machine's last poll may predate its last sync; the count must never fall behind any group's view
            # of it (else workers stop at the budget before the driver sees it reached). A lost machine's steps
            # count only as far as its work reached the global weights.
            self.steps_of[i] = synced if i in self.lost else max(self.steps_of[i], synced)
        return total

    def _server_died(self, error) -> None:
        if self.failure is None:
            self.failure = ("the parameter server", why_actor_died(error))

    def pull_into(self, shared_model, optimizer) -> int | None:
        """Global weights and one machine's SharedAdam statistics into the driver's copies, for a checkpoint;
        returns the steps they are of (None if the server is gone: the copies keep what they last had)."""
        for i in sorted(self.alive):
            try:
                state = self.ray.get(self.groups[i].optimizer_state.remote(), timeout=CALL_TIMEOUT)
            except self.actor_errors:
                continue
            if optimizer is not None and state:
                optimizer.load_state_dict(state)
            break
        try:
            return self._apply(self.ray.get(self.server.pull.remote(), timeout=CALL_TIMEOUT), shared_model)
        except self.actor_errors as error:
            self._server_died(error)
            return None

    def stop(self, handle) -> None:
        """Stop every group (each syncs its last updates first) and take what they still had to tell."""
        stops = {i: self.groups[i].stop.remote() for i in self.alive}
        for i, ref in stops.items():
            try:
                if i in self.pending:  # answered before the stop: the actor runs calls in order
                    self.take(i, self.ray.get(self.pending.pop(i)[0], timeout=CALL_TIMEOUT), handle)
                report = self.ray.get(ref, timeout=CALL_TIMEOUT)
            except self.actor_errors as error:
                self.lose(i, why_actor_died(error))
                continue
            report.dead = None  # workers the stop itself had to kill are no failure
            self.take(i, report, handle)

    def describe(self, seconds: float) -> str:
        """Per machine: steps/s over `seconds`, and the median round trip of its recent syncs."""
        parts = []
        for i, name in enumerate(self.names):
            if i in self.lost:
                parts.append(f"{name} lost")
                continue
            sync = f", sync {median(self.sync_ms[i]):.0f} ms" if self.sync_ms[i] else ""
            parts.append(f"{name} {self.steps_of[i] / max(seconds, 1e-9):,.0f} steps/s{sync}")
        return ", ".join(parts)

    def shutdown(self) -> None:
        for actor in [*self.groups, self.server]:
            self.ray.kill(actor)


class ClusterRun(supervision.Run):
    """supervision.Run over the machines: the same record, budgets and checkpoints, of the global weights."""

    def __init__(self, args, shared_model, optimizer, nodes: list):
        self.nodes = nodes
        super().__init__(args, shared_model, optimizer, ctx=mp.get_context("spawn"))  # no fork beside Ray's threads
        self.machines = None

    def workers_description(self) -> str:
        machines, workers = len(self.nodes), self.args.num_processes
        return f"{machines} machine{'s' * (machines != 1)} x {workers} worker{'s' * (workers != 1)}"

    def start_machines(self, ray, env, model_class, optimizer_class, train) -> int:
        """One group per machine, from the weights and statistics this run starts from; returns the workers."""
        self.machines = Machines(
            ray,
            self.args,
            spaces_of(env),
            self.shared_model,
            self.optimizer,
            self.counter_start,
            model_class=model_class,
            optimizer_class=optimizer_class,
            train=train,
            nodes=self.nodes,
        )
        print(f"Machines: {', '.join(self.machines.names)}; each syncs every {self.args.sync_interval:g} s", flush=True)
        return self.machines.workers

    def keep_up(self):
        self.machines.poll(self.handle)
        self.machines.refresh(self.shared_model)  # the test process plays the global weights
        self.shared.base.value = self.machines.steps()  # the run's count (the test process adds none)

    def failure(self):
        return super().failure() or self.machines.failure

    def stop_children(self):
        self.machines.stop(self.handle)  # first: the groups' last syncs
        super().stop_children()

    def save_all(self, steps=None, final: bool = False) -> bool:
        synced = self.machines.pull_into(self.shared_model, self.optimizer)
        self.shared.base.value = self.machines.steps()
        return super().save_all(synced if synced is not None else self.steps(), final)

    def status_line(self) -> str:
        return f"{super().status_line()} | {self.machines.describe(time.time() - self.start_time)}"


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
        run = ClusterRun(args, shared_model, optimizer, training_nodes(ray))
        try:
            workers = run.start_machines(ray, env, model_class, optimizer_class, train)
        except ClusterError as error:
            fail(f"main.py: error: {error}")
        test_process = mp.get_context("spawn").Process(target=run.child(test), args=(workers, args, shared_model))
        test_process.start()
        return run.supervise([test_process])
    finally:
        if run is not None and run.machines is not None:
            run.machines.shutdown()
        ray.shutdown()

"""Throughput of the cluster path on this machine, with 1 and 2 simulated nodes, and what one sync costs.

    python benchmarks/cluster.py                         # 2 workers in all, each layout measured 30 s
    python benchmarks/cluster.py --workers 2 --repeats 3 # layouts alternated three times; medians

Each layout is a fresh ray.cluster_utils.Cluster on loopback (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, node IP
127.0.0.1, token authentication), training Breakout through a3c_extras.cluster exactly as main.py --ray-address does
(without the test process):

  1 node   one Ray node with all the cores: one group of --workers workers;
  2 nodes  two Ray nodes sharing the same cores: two groups of --workers / 2 workers, as two machines would run.

Steps/s are counted from the steps the groups synced between the end of the warm-up and the end of the
measurement; the CPU time of every process of the run over the same window tells what the workers got and what went
to Ray, the actors and the driver. Then, with no training running, --rounds syncs of the second node's group, one
after another, as the main process asks them: the global weights put in Ray's object store, the group's poll that
carries them (they go down, its delta comes up) and its answer, on a quiet machine. With --repeats R the layouts
alternate R times and each figure is the median. The last line is machine-readable:
  one_node_steps_per_s=... two_nodes_steps_per_s=... sync_bytes=... sync_ms_quiet=...
"""

import argparse
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # as main.py: one intra-op thread per process
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # with the node IP below: every Ray socket on loopback
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project's modules

import psutil  # noqa: E402
import torch  # noqa: E402

from a3c_extras import cluster  # noqa: E402
from a3c_extras.cli import (  # noqa: E402
    fail,
    number,
    read_command_line,  # noqa: E402
)
from a3c_extras.cluster_actors import flat_weights  # noqa: E402
from a3c_extras.events import GaveUp  # noqa: E402
from a3c_extras.shared import shared_model_and_optimizer  # noqa: E402
from envs import create_atari_env  # noqa: E402
from main import Params  # noqa: E402
from model import ActorCritic  # noqa: E402
from my_optim import SharedAdam  # noqa: E402
from train import train  # noqa: E402

LOOPBACK = "127.0.0.1"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="A3C on a simulated Ray cluster: steps/s with 1 and 2 nodes, sync cost")
    cores = os.cpu_count() or 2
    p.add_argument("--workers", type=number(int, low=2), default=cores, help="in all, split between the nodes")
    p.add_argument("--warmup", type=number(float, low=0), default=15, help="seconds before measuring (default: 15)")
    p.add_argument("--measure", type=number(float, above=0), default=30, help="seconds measured (default: 30)")
    p.add_argument("--repeats", type=number(int, low=1), default=1, help="rounds of the two layouts (default: 1)")
    p.add_argument("--sync-interval", type=number(float, above=0), default=2, help="as main.py's (default: 2)")
    p.add_argument("--rounds", type=number(int, low=1), default=50, help="quiet syncs timed (default: 50)")
    p.error = lambda message: fail(f"{p.prog}: error: {message}")
    args = p.parse_args(argv)
    if args.workers % 2:
        fail(f"{p.prog}: error: --workers must be even, to split them between two nodes")
    return args


def start_cluster(nodes: int, cpus: int):
    from ray.cluster_utils import Cluster

    simulated = Cluster(
        initialize_head=True, head_node_args={"node_ip_address": LOOPBACK, "num_cpus": cpus, "include_dashboard": False}
    )
    for _ in range(nodes - 1):
        simulated.add_node(node_ip_address=LOOPBACK, num_cpus=cpus)
    return simulated


def cpu_seconds() -> dict:
    """CPU seconds of this process's descendants (the cluster, the actors, the workers), by pid, marking the
    training workers (started with the spawn method)."""
    seconds = {}
    for p in psutil.Process().children(recursive=True):
        try:
            worker = any("spawn_main" in part for part in p.cmdline())
            times = p.cpu_times()
            seconds[p.pid] = (worker, times.user + times.system)
        except psutil.Error:
            pass
    return seconds


def cpu_split(before: dict, after: dict, seconds: float) -> tuple[float, float]:
    """Cores used by the training workers and by everything else of the run, between two cpu_seconds()."""
    used = {True: 0.0, False: 0.0}
    for pid, (worker, total) in after.items():
        used[worker] += total - before.get(pid, (worker, 0.0))[1]
    return used[True] / seconds, used[False] / seconds


def start_machines(ray, training, heard: list):
    """The run's groups on the cluster's machines, from a fresh shared model, as main.py's cluster path starts them;
    their events go to `heard`."""
    env = create_atari_env(training.env_name)
    shared_model, optimizer = shared_model_and_optimizer(training, env, ActorCritic, SharedAdam)
    options = {"model_class": ActorCritic, "optimizer_class": SharedAdam, "train": train}
    return cluster.Machines(ray, training, cluster.spaces_of(env), shared_model, optimizer, 0, heard.append, **options)


def run_layout(nodes: int, args) -> dict:
    """Train on `nodes` simulated nodes; return steps/s over the measurement and the cores used."""
    per_node = args.workers // nodes
    simulated = start_cluster(nodes, per_node)
    ray = cluster.connect(simulated.address)
    machines = None
    try:
        training = read_command_line(
            Params(), ["--num-processes", str(per_node), "--sync-interval", str(args.sync_interval)]
        )
        torch.manual_seed(training.seed)
        heard = []
        machines = start_machines(ray, training, heard)

        def poll_for(seconds: float) -> None:
            end = time.time() + seconds
            while time.time() < end:
                machines.poll()
                time.sleep(0.5)

        poll_for(args.warmup)
        before, started, cpu_before = list(machines.synced), time.time(), cpu_seconds()
        driver_before = sum(psutil.Process().cpu_times()[:2])
        poll_for(args.measure)
        seconds = time.time() - started
        workers_cores, others_cores = cpu_split(cpu_before, cpu_seconds(), seconds)
        others_cores += (sum(psutil.Process().cpu_times()[:2]) - driver_before) / seconds  # the driver's own
        rates = [(after - b) / seconds for after, b in zip(machines.synced, before)]  # as far as the driver knows
        machines.stop()
        failure = next((event for event in heard if isinstance(event, GaveUp)), None)
        if failure:
            fail(f"cluster.py: error: {failure.name} died: {failure.why}")
        per_machine = ", ".join(f"{name} {rate:,.0f}" for name, rate in zip(machines.names, rates))
        return {
            "steps_per_s": sum(rates),
            "per_machine": per_machine,
            "cores": (workers_cores, others_cores),
        }
    finally:
        if machines is not None:
            machines.shutdown()
        ray.shutdown()
        simulated.shutdown()


def quiet_syncs(args) -> list[float]:
    """Syncs of the second node's group, one after another, with no worker running, as the main process asks them
    (cluster.Machines.poll): milliseconds from putting the global weights to having the group's answer."""
    simulated = start_cluster(2, 1)
    ray = cluster.connect(simulated.address)
    machines = None
    try:
        training = read_command_line(Params(), [])
        training.num_processes = 0  # groups without workers: only the syncs run
        machines = start_machines(ray, training, [])
        second, weights = machines.groups[1], flat_weights(machines.shared_model).numpy()
        time.sleep(5)  # Ray starts some Python workers of its own after a node starts: let them settle
        ray.get([second.poll.remote(ray.put(weights)) for _ in range(10)])  # warm-up
        whole = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            ray.get(second.poll.remote(ray.put(weights)))
            whole.append((time.perf_counter() - start) * 1000)
        return whole
    finally:
        if machines is not None:
            machines.shutdown()
        ray.shutdown()
        simulated.shutdown()


def spread(values: list[float], unit: str = " ms") -> str:
    if not values:
        return "none"
    low, high = (statistics.quantiles(values, n=10)[::8]) if len(values) > 1 else (values[0], values[0])
    return f"median {statistics.median(values):,.1f}{unit} (p10 {low:,.1f}, p90 {high:,.1f}, n={len(values)})"


def main(argv=None) -> int:
    args = parse_args(argv)
    training = read_command_line(Params(), [])
    parameters = sum(
        p.numel()
        for p in shared_model_and_optimizer(training, create_atari_env(training.env_name), ActorCritic, SharedAdam)[
            0
        ].parameters()
    )
    sync_bytes = 2 * 4 * parameters  # float32 delta up, float32 merged weights down
    print(
        f"{args.workers} workers in all, Breakout, sync every {args.sync_interval:g} s; one sync moves "
        f"{sync_bytes / 1e6:.2f} MB ({parameters:,} float32 parameters each way)",
        flush=True,
    )
    rates = {1: [], 2: []}
    for _ in range(args.repeats):
        for nodes in (1, 2):
            r = run_layout(nodes, args)
            rates[nodes].append(r["steps_per_s"])
            print(
                f"{nodes} node(s) x {args.workers // nodes} workers: {r['steps_per_s']:,.0f} steps/s "
                f"({r['per_machine']}); cores: workers {r['cores'][0]:.2f}, Ray + actors + driver {r['cores'][1]:.2f}",
                flush=True,
            )
    quiet = quiet_syncs(args)
    print(f"quiet syncs of the second node: {spread(quiet)}")
    for nodes in (1, 2):
        print(f"{nodes} node(s): steps/s {spread(rates[nodes], '')}")
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(
        f"one_node_steps_per_s={one:.0f} two_nodes_steps_per_s={two:.0f} "
        f"sync_bytes={sync_bytes} sync_ms_quiet={statistics.median(quiet):.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

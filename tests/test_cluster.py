"""The same A3C on a Ray cluster, simulated on this machine: two nodes of ray.cluster_utils.Cluster, on loopback only.

Ray binds to the machine's network address unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is in the environment and
the node IP is 127.0.0.1: every cluster here is started with both, and a test checks that no socket of a run
leaves loopback. Token authentication is on, with a token of the tests' own in the environment."""

import argparse
import ipaddress
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import cluster_doubles
import psutil
import pytest
import torch
from gymnasium.spaces import Discrete

import my_optim
from a3c_extras import cli, cluster
from a3c_extras.checkpoints import load_checkpoint
from a3c_extras.cluster_actors import Group, flat_weights
from a3c_extras.events import GaveUp, MachineLost
from catch import Catch, make_catch
from conftest import ROOT
from helpers import (  # noqa: F401 (the fixture stops every run)
    LiveRun,
    alive,
    greedy_return,
    no_run_left_behind,
    own_lines,
    shared_model_and_optimizer,
    wait_until,
)
from model import ActorCritic
from train import train

LOOPBACK = "127.0.0.1"
RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN": secrets.token_hex(16),
    "PYTHONPATH": str(ROOT / "tests"),  # the Ray workers import Catch from here
}
FAST = "--num-processes 1 --eval-interval 1 --record-every 0 --status-interval 1 --sync-interval 1".split()


def ray_processes() -> list[psutil.Process]:
    """Ray's processes (raylet, gcs_server, Ray's Python workers), ours inside Ray (actors) among them."""
    found = []
    for p in psutil.process_iter(["name", "cmdline", "exe"]):
        command = " ".join(p.info["cmdline"] or [])
        if p.info["name"] in ("raylet", "gcs_server") or "ray::" in command or "ray/_private/workers" in command:
            found.append(p)
    return found


@pytest.fixture(scope="module", autouse=True)
def ray_environment():
    """Loopback only and token authentication, for every Ray process of this module, main.py's included."""
    saved = {key: os.environ.get(key) for key in RAY_ENV}
    os.environ.update(RAY_ENV)  # before Ray is imported: it reads the first one then
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def wait_until_gone(find, timeout: float = 10) -> list[psutil.Process]:
    """What `find()` still lists after up to `timeout` seconds (Ray takes a moment to reap a killed actor)."""
    wait_until(lambda: not alive(find()), timeout)
    return alive(find())


@pytest.fixture(scope="module")
def ray_cluster():
    """Two Ray nodes of one CPU each on this machine, on loopback: the tests' two machines."""
    from ray.cluster_utils import Cluster

    nodes = Cluster(
        initialize_head=True, head_node_args={"node_ip_address": LOOPBACK, "num_cpus": 1, "include_dashboard": False}
    )
    nodes.add_node(node_ip_address=LOOPBACK, num_cpus=1)
    try:
        yield nodes
    finally:
        nodes.shutdown()
    left = wait_until_gone(ray_processes)
    assert not left, [p.info for p in left]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--ray-address", "nohost"], "expected local, auto or HOST:PORT"),
        (["--ray-address", "local", "--no-shared"], "--no-shared is not supported"),
        (["--ray-address", f"{LOOPBACK}:{closed_port()}"], "cannot reach the Ray cluster"),
    ],
)
def test_bad_cluster_input_is_refused_in_one_line(argv, says):
    out = subprocess.run([sys.executable, "main.py", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = own_lines(out.stderr)
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in out.stderr, out.stderr


def test_cluster_addresses_are_checked_before_ray_is_involved():
    for good in ("local", "auto", "10.0.0.1:6379", "head.example:6379", "[::1]:6379"):
        assert cli.ray_address(good) == good
    for bad, says in (
        ("ray://head:10001", "Ray Client"),
        ("head", "HOST:PORT"),
        ("head:0", "HOST:PORT"),
        ("head:x", "HOST:PORT"),
        (":6379", "HOST:PORT"),
    ):
        with pytest.raises(argparse.ArgumentTypeError, match=says):
            cli.ray_address(bad)


def test_ray_is_imported_only_with_the_flag():
    script = (
        "import sys, main; from a3c_extras import cli; "
        "cli.read_command_line(main.Params(), ['--num-processes', '1']); print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def no_worker_group(index):
    """A Group with no workers, made here rather than by Ray: its syncs are the calls of this test."""
    args = SimpleNamespace(
        num_processes=0, max_steps=0, no_shared=True, max_restarts=0, restart_window=600, max_nonfinite=100
    )
    spaces = SimpleNamespace(observation_space=SimpleNamespace(shape=(1, 42, 42)), action_space=Discrete(3))
    return Group(
        index=index,
        name=f"machine {index}",
        params=args,
        spaces=spaces,
        model_class=ActorCritic,
        optimizer_class=None,
        train=train,
    )


def shift(model, amount: float):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(amount)


def test_a_sync_adds_every_machines_moves_to_the_global_weights_once():
    """Downpour's arithmetic, the main process's side (cluster.Machines.take) written out: the global weights move by
    the sum of what each group moved; a group ends with the global weights plus what its workers moved since it
    synced; the steps are counted once each, and a group's workers never see more steps than the run took."""
    w0 = flat_weights(ActorCritic(1, Discrete(3)))
    global_weights, total = w0.clone(), 100
    a, b = no_worker_group(0), no_worker_group(1)

    def sync(group):
        nonlocal total
        report = group.poll(global_weights.numpy(), total)
        global_weights.add_(torch.from_numpy(report.delta))
        total += report.steps

    sync(a)
    sync(b)  # the first syncs: each group takes the global weights
    torch.testing.assert_close(flat_weights(a.model), w0)
    shift(a.model, 1.0)
    a.shared.steps[0] += 20
    shift(b.model, 2.0)
    b.shared.steps[0] += 40
    sync(a)  # the global weights: w0 + 1
    shift(a.model, 0.5)  # a's workers move on after its sync
    a.shared.steps[0] += 7
    sync(b)  # w0 + 1 + 2
    torch.testing.assert_close(global_weights, w0 + 3.0)
    torch.testing.assert_close(flat_weights(b.model), w0 + 3.0)
    torch.testing.assert_close(flat_weights(a.model), w0 + 1.5)  # the global weights then, and its 0.5 since
    assert total == 100 + 20 + 40
    assert a.shared.total() == 100 + 20 + 7 and b.shared.total() == 160  # each group's view of the run's count
    sync(a)  # sends the 0.5 and the 7 steps, takes b's move
    torch.testing.assert_close(global_weights, w0 + 3.5)
    torch.testing.assert_close(flat_weights(a.model), w0 + 3.5)
    assert total == 167 and a.shared.total() == 167 and b.shared.total() == 160
    stopped = a.stop()  # a last sync, without the global weights: what moved since
    assert stopped.steps == 0
    torch.testing.assert_close(torch.from_numpy(stopped.delta), torch.zeros_like(w0))  # nothing moved


def test_catch_learns_from_chance_through_a_two_node_cluster(ray_cluster, args):
    """As test_train's learning test, through the cluster path: one worker on each of two nodes, each node's
    group syncing with the parameter server every --sync-interval (default) seconds; the global weights play."""
    args.lr, args.max_steps, args.num_processes = 1e-3, 20_000, 1
    torch.manual_seed(args.seed)
    env = Catch()
    shared_model, optimizer = shared_model_and_optimizer(args, env)
    assert greedy_return(shared_model) < -0.3  # the weights the machines start from play at chance
    ray = cluster.connect(ray_cluster.address)
    machines, heard = None, []
    try:
        options = {"model_class": ActorCritic, "optimizer_class": my_optim.SharedAdam, "train": train}
        spaces = cluster.spaces_of(env)
        machines = cluster.Machines(
            ray, args, spaces, shared_model, optimizer, 0, heard.append, **options, make_env=make_catch
        )
        assert len(machines.names) == 2

        def budget_or_failure():
            machines.poll()
            return machines.total >= args.max_steps or any(isinstance(e, GaveUp) for e in heard)

        assert wait_until(budget_or_failure, 180, every=0.5), heard
        machines.stop()
        assert not any(isinstance(e, GaveUp | MachineLost) for e in heard), heard
        steps = machines.total
    finally:
        if machines is not None:
            machines.shutdown()
        ray.shutdown()
    assert steps >= 20_000 and all(s > 5_000 for s in machines.synced), machines.synced  # both machines played
    score = greedy_return(shared_model)
    print(f"greedy return {score:.3f} after {steps:,} steps ({machines.synced})")
    assert score > 0.5, f"greedy return after {steps} steps through the cluster: {score}; chance is about -0.73"


def test_a_group_whose_call_raises_is_dropped_in_one_line(ray_cluster, args, monkeypatch):
    """A group that raises (a bug, a full disk) lives on, so Ray restarts nothing: it is dropped at once, named by the
    error's line, and the run gives up when no machine is left."""
    monkeypatch.setattr(cluster, "Group", cluster_doubles.FailingGroup)
    env, heard = Catch(), []
    shared_model, optimizer = shared_model_and_optimizer(args, env)
    ray = cluster.connect(ray_cluster.address)
    try:
        options = {"model_class": ActorCritic, "optimizer_class": my_optim.SharedAdam, "train": train}
        machines = cluster.Machines(
            ray, args, cluster.spaces_of(env), shared_model, optimizer, 0, heard.append, **options
        )
        gave_up = wait_until(lambda: machines.poll() or [e for e in heard if isinstance(e, GaveUp)], 60)
        machines.shutdown()
    finally:
        ray.shutdown()
    lost = [e for e in heard if isinstance(e, MachineLost)]
    assert len(lost) == 2 and all("OSError: no room for the global weights" in e.why for e in lost), heard
    assert gave_up and gave_up[0].name == "every machine", heard


def is_loopback(address) -> bool:
    ip = ipaddress.ip_address(address.ip)
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback  # Ray listens on ::ffff:127.0.0.1 too


def sockets_off_loopback() -> list:
    """Every inet socket of this test's processes (the cluster's, main.py's, Ray's workers) not on 127.0.0.1."""
    found = []
    for p in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            for c in p.net_connections(kind="inet"):
                if not is_loopback(c.laddr) or (c.raddr and not is_loopback(c.raddr)):
                    found.append((p.name(), c))
        except psutil.NoSuchProcess:
            pass
    return found


def our_actors() -> list[psutil.Process]:
    return [p for p in ray_processes() if "ray::Group" in " ".join(p.cmdline())]


def test_breakout_through_the_cluster_counts_checkpoints_and_resumes(ray_cluster, tmp_path):
    run = LiveRun("--ray-address", ray_cluster.address, *FAST, "--max-steps", "2000", "--run-dir", str(tmp_path))
    run.wait_for(r"machine 1 \(127.0.0.1\) [\d,]+ steps/s")  # both machines train (not the test process's first
    # line: under load the budget was once reached before the test process finished its first game)
    offside = sockets_off_loopback()  # while everything runs: the cluster, main.py, its actors and workers
    assert not offside, offside
    assert run.wait(timeout=120) == 0, run.errors
    assert any("Machines: machine 0 (127.0.0.1), machine 1 (127.0.0.1)" in line for line in run.lines), run.lines
    saved = load_checkpoint(tmp_path, num_actions=4)
    assert 2000 <= saved["counter"] < 2000 + 3000, saved["counter"]
    assert saved["optimizer"]["state"][0]["step"].item() > 0  # a group's SharedAdam statistics
    rows = (tmp_path / "progress.csv").read_text().splitlines()
    assert any(row.startswith("train,") for row in rows) and (tmp_path / "learning_curve.png").exists()
    assert not wait_until_gone(our_actors)

    second = LiveRun("--ray-address", ray_cluster.address, "--resume", str(tmp_path), "--max-steps", "4000")
    assert second.wait(timeout=120) == 0, second.errors
    assert any("resumed at step" in line for line in second.lines)
    resumed = load_checkpoint(tmp_path)
    assert resumed["counter"] >= 4000 and resumed["elapsed"] > saved["elapsed"]
    assert resumed["optimizer"]["state"][0]["step"] > saved["optimizer"]["state"][0]["step"]
    assert any(not torch.equal(resumed["model"][k], saved["model"][k]) for k in saved["model"])
    assert (tmp_path / "progress.csv").read_text().splitlines()[: len(rows)] == rows
    assert not wait_until_gone(our_actors)


def second_machines_group(run):
    """Once both machines train: the process of machine 1's group, and its workers."""
    run.wait_for(r"machine 1 \(127.0.0.1\) [1-9][\d,]* steps/s")

    def machine_1():
        # machine 1's group: its workers name themselves "a3c machine 1 (127.0.0.1) worker 1", cut to 15 bytes
        for group in alive(our_actors()):
            workers = [p for p in alive(group.children()) if p.name() == "a3c machine 1 ("]
            if workers:
                return group, workers
        return None

    found = wait_until(machine_1, 60)
    assert found, f"machine 1's group and its workers not found: {run.errors}"
    return found


def seconds_until_lost(run, since: float) -> float:
    while not any("lost" in line for line in run.errors) and time.time() - since < 30:
        time.sleep(0.1)
    assert any(
        re.match(r"main.py: machine 1 \(127.0.0.1\) lost: .*; the run goes on with 1 of 2 machines", line)
        for line in run.errors
    ), run.errors
    return time.time() - since


def test_a_killed_machine_rejoins_then_is_dropped_when_its_restarts_are_spent(ray_cluster, tmp_path):
    """Ray starts a killed group again: it rejoins with the global weights and trains on. Killed a second time within
    the window, with --max-restarts 1, it is dropped, and machine 0 trains on alone; each step is a line on stderr
    and a row of events.csv. Every wait is for an event, none for a budget."""
    run = LiveRun("--ray-address", ray_cluster.address, *FAST, "--max-restarts", "1", "--run-dir", str(tmp_path))
    group, workers = second_machines_group(run)
    group.kill()
    run.wait_for(r"machine 1 \(127.0.0.1\) rejoined with the global weights", timeout=90, stream="errors")
    assert any(re.match(r"main.py: machine 1 \(127.0.0.1\) died: .*; restarted", line) for line in run.errors)
    run.wait_for(r"restarts 1 .*machine 1 \(127.0.0.1\) [1-9][\d,]* steps/s", timeout=30)  # trains again
    group, new_workers = second_machines_group(run)
    group.kill()
    assert seconds_until_lost(run, time.time()) < 5  # Ray tells the driver at once
    assert any("died 2 times within 600 s" in line for line in run.errors), run.errors
    run.wait_for(r"machine 1 \(127.0.0.1\) lost", timeout=10)  # in the status line too
    steps_then = status_steps(run.lines)
    wait_until(lambda: status_steps(run.lines) > steps_then or run.proc.poll() is not None, 30)
    assert status_steps(run.lines) > steps_then and run.proc.poll() is None, (run.lines, run.errors)  # machine 0 trains
    os.killpg(run.proc.pid, signal.SIGINT)
    assert run.wait(timeout=60) == 0, run.errors
    assert load_checkpoint(tmp_path)["counter"] >= steps_then
    events = [line.split(",")[3:5] for line in (tmp_path / "events.csv").read_text().splitlines()[1:]]
    machine_1 = "machine 1 (127.0.0.1)"
    assert events == [["restart", machine_1], ["machine rejoined", machine_1], ["machine lost", machine_1]], events
    assert not wait_until_gone(lambda: [*workers, *new_workers]) and not wait_until_gone(our_actors)


def test_a_silent_machine_is_dropped_and_killed(ray_cluster, tmp_path):
    """A machine that stops answering (frozen, cut off): Ray alone would wait about a minute for its health checks;
    the run drops it after cluster.SILENCE_LIMIT seconds and has it killed, workers included."""
    run = LiveRun("--ray-address", ray_cluster.address, *FAST, "--run-dir", str(tmp_path))
    group, workers = second_machines_group(run)
    group.suspend()  # SIGSTOP: alive, silent
    try:
        took = seconds_until_lost(run, time.time())
        assert cluster.SILENCE_LIMIT <= took < cluster.SILENCE_LIMIT + 5, took
        assert any(f"no answer for {cluster.SILENCE_LIMIT} s" in line for line in run.errors), run.errors
        assert not wait_until_gone(lambda: [group, *workers])  # killed, though it never answered
        run.wait_for(r"machine 1 \(127.0.0.1\) lost", timeout=10)  # in the status line too
        steps_then = status_steps(run.lines)
        time.sleep(2)
        assert status_steps(run.lines) > steps_then  # machine 0 trains on
        os.killpg(run.proc.pid, signal.SIGINT)
        assert run.wait(timeout=60) == 0, run.errors
        assert load_checkpoint(tmp_path)["counter"] >= steps_then
    finally:
        if group.is_running():
            group.resume()


def status_steps(lines) -> int:
    """The step count of the last status line among `lines`."""
    counts = [int(m.group(1).replace(",", "")) for line in lines if (m := re.match(r"steps ([\d,]+) \|", line))]
    assert counts, lines
    return counts[-1]


def test_sigint_stops_a_local_cluster_run_cleanly(tmp_path):
    """--ray-address local: Ray started inside main.py, which must take all of it down at Ctrl-C."""
    run = LiveRun("--ray-address", "local", *FAST, "--run-dir", str(tmp_path))
    run.wait_for(r"^steps [1-9]")  # the workers train (the test process may print before their first step)
    children = run.children()
    names = {p.name() for p in children}
    assert {"raylet", "gcs_server"} <= names, names
    assert not sockets_off_loopback()
    sent = time.time()
    os.killpg(run.proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
    assert run.wait(timeout=60) == 0, run.errors
    assert time.time() - sent < 30
    assert any("stopped by SIGINT" in line for line in run.lines)
    assert load_checkpoint(tmp_path)["counter"] > 0
    left = wait_until_gone(lambda: children)
    assert not left, [p.name() for p in left]

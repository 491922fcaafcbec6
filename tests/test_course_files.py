"""The six course files read as the course: its calls work as a learner types them, and imports go one
way, from the course files into a3c_extras, with no cycle anywhere."""

import ast
import os
import re
import signal
import subprocess
import sys
import threading

import av
import psutil
import pytest

from conftest import ROOT
from envs import create_atari_env
from helpers import wait_until

COURSE = ["main", "model", "train", "test", "my_optim", "envs"]


def project_imports(path) -> set[str]:
    """The project's modules a file imports (course files by name, package modules as a3c_extras.X)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] in COURSE:
                found.add(name.split(".")[0])
            elif name.startswith("a3c_extras.") and (ROOT / "a3c_extras" / f"{name.split('.')[1]}.py").exists():
                found.add(".".join(name.split(".")[:2]))
    return found


def module_graph() -> dict[str, set[str]]:
    graph = {name: project_imports(ROOT / f"{name}.py") for name in COURSE}
    for path in (ROOT / "a3c_extras").glob("*.py"):
        graph[f"a3c_extras.{path.stem}"] = project_imports(path) - {f"a3c_extras.{path.stem}"}
    return graph


def test_the_package_never_imports_a_course_file():
    for module, imports in module_graph().items():
        if module.startswith("a3c_extras"):
            assert not imports & set(COURSE), f"{module} imports {imports & set(COURSE)}"


def test_no_import_cycle():
    graph, done, path = module_graph(), set(), []

    def visit(module):
        if module in path:
            pytest.fail("import cycle: " + " -> ".join(path[path.index(module) :] + [module]))
        if module in done:
            return
        path.append(module)
        for imported in graph.get(module, ()):
            visit(imported)
        path.pop()
        done.add(module)

    for module in graph:
        visit(module)


# The course's main.py, line for line as its learners have it, but for the guard spawn needs, a shorter
# game and two processes: its own Params with the course's eight fields, nothing from a3c_extras.
COURSE_MAIN = """
import os
import torch
import torch.multiprocessing as mp
from envs import create_atari_env
from model import ActorCritic
from train import train
from test import test
import my_optim

class Params():
    def __init__(self):
        self.lr = 0.0001
        self.gamma = 0.99
        self.tau = 1.
        self.seed = 1
        self.num_processes = 2
        self.num_steps = 20
        self.max_episode_length = 10000
        self.env_name = 'BreakoutDeterministic-v4'

if __name__ == '__main__':
    os.environ['OMP_NUM_THREADS'] = '1'
    params = Params()
    torch.manual_seed(params.seed)
    env = create_atari_env(params.env_name)
    shared_model = ActorCritic(env.observation_space.shape[0], env.action_space)
    shared_model.share_memory()
    optimizer = my_optim.SharedAdam(shared_model.parameters(), lr=params.lr)
    optimizer.share_memory()
    before = [t.clone() for t in shared_model.parameters()]  # the test's: is the shared model trained?
    processes = []
    p = mp.Process(target=test, args=(params.num_processes, params, shared_model))
    p.start()
    processes.append(p)
    for rank in range(0, params.num_processes):
        p = mp.Process(target=train, args=(rank, params, shared_model, optimizer))
        p.start()
        processes.append(p)
    import time; time.sleep(20)  # the test's: watch the shared weights while the processes run
    changed = any(not a.equal(b) for a, b in zip(before, shared_model.parameters()))
    print(f"changed {changed} children {[q.pid for q in processes]}", flush=True)
    for p in processes:
        p.join()
"""


def test_the_course_main_body_trains_and_the_test_process_prints_its_line(tmp_path):
    """The course's main.py body as typed: its Params (eight fields), train(rank, params, shared_model,
    optimizer) and test(rank, params, shared_model) in mp.Process. The shared weights change, the test
    process prints the course's line, it records its episodes into ./test as the course's Monitor did,
    and the children end when the main process is killed."""
    script = tmp_path / "course_main.py"
    script.write_text(COURSE_MAIN)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines = []
    timer = threading.Timer(180, os.killpg, (proc.pid, signal.SIGKILL))  # a hang fails, never blocks
    timer.start()
    try:
        for line in proc.stdout:
            lines.append(line.strip())
            if any(x.startswith("changed ") for x in lines) and any(x.startswith("Time ") for x in lines):
                break
        proc.kill()  # the main process alone, as a kill from outside would: its children must follow
        proc.wait()
        summary = [line for line in lines if line.startswith("changed ")]
        assert summary, lines
        children = [int(pid) for pid in re.findall(r"\d+", summary[0].split("children")[1])]

        def still_running():
            return [pid for pid in children if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]

        wait_until(lambda: not still_running(), 10)
        left = still_running()
    finally:
        timer.cancel()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert summary[0].startswith("changed True"), summary
    line = r"Time \d\dh \d\dm \d\ds, episode reward [-\d.]+, episode length \d+"
    line += r"(, cut short: no FIRE to serve in [\d,]+ agent steps)?"  # an agent that never serves
    assert any(re.fullmatch(line, x) for x in lines), lines
    assert left == [], f"children still running after the main process was killed: {left}"
    videos = sorted((tmp_path / "test").glob("episode-*.mp4"))
    assert videos and videos[0].name.startswith("episode-000000-"), list((tmp_path / "test").iterdir())


def test_the_course_create_atari_env_with_video_records_an_mp4(tmp_path, monkeypatch):
    """create_atari_env(env_id, video=True), as the course's test.py calls it: episodes 0, 1, 8, 27, ...
    go to ./test as MP4s, as gym's Monitor recorded them."""
    monkeypatch.chdir(tmp_path)
    env = create_atari_env("BreakoutDeterministic-v4", video=True)
    for _ in range(3):
        env.reset(seed=0)
        for _ in range(30):
            env.step(1)
    env.reset()
    names = sorted(p.name for p in (tmp_path / "test").iterdir())
    # episode 2: not a cube; each episode here is reset after 30 steps, before its game ends: cut short
    assert names == ["episode-000000-reward0-cut-short.mp4", "episode-000001-reward0-cut-short.mp4"], names
    with av.open(str(tmp_path / "test" / names[0])) as container:
        assert sum(1 for _ in container.decode(video=0)) == 30  # one frame per agent step

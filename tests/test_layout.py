"""The six course files read as the course: its calls work as a learner types them, and imports go one
way, from the course files into a3c_extras, with no cycle anywhere."""

import ast
import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from conftest import ROOT

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
            pytest.fail("import cycle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        path.append(module)
        for imported in graph.get(module, ()):
            visit(imported)
        path.pop()
        done.add(module)

    for module in graph:
        visit(module)


COURSE_CALLS = """
import torch.multiprocessing as mp

import main
import my_optim
from a3c_extras.supervision import WorkerLink
from envs import create_atari_env
from model import ActorCritic
from test import test
from train import train

if __name__ == "__main__":
    args = main.parse_args(["--max-steps", "300", "--eval-interval", "0", "--record-every", "0", *{extra}])
    env = create_atari_env(args.env_name)
    shared_model = ActorCritic(env.observation_space.shape[0], env.action_space)
    shared_model.share_memory()
    optimizer = my_optim.SharedAdam(shared_model.parameters(), lr=args.lr)
    optimizer.share_memory()
    p = mp.Process(target=test, args=(args.num_processes, args, shared_model), daemon=True)
    p.start()
    before = [t.clone() for t in shared_model.parameters()]
    link = WorkerLink(max_steps=args.max_steps)  # to count the steps; train makes the same one without it
    train(0, args, shared_model, optimizer, link=link)
    changed = any(not a.equal(b) for a, b in zip(before, shared_model.parameters()))
    print(f"steps {{link.total_steps()}} updates {{optimizer.state[shared_model.conv1.weight]['step'].item():.0f}} "
          f"changed {{changed}}", flush=True)
    p.join()  # the course's test process plays on forever: the test stops it once it has printed
"""


@pytest.mark.parametrize("rollout", ["classic", "fast"])
def test_the_course_calls_run_as_typed(rollout, tmp_path):
    """ActorCritic(env.observation_space.shape[0], env.action_space), SharedAdam, train(rank, args,
    shared_model, optimizer) and test(rank, args, shared_model), as the course calls them."""
    script = tmp_path / "course_calls.py"
    script.write_text(COURSE_CALLS.format(extra=["--rollout", rollout]))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    lines = []
    timer = threading.Timer(180, os.killpg, (proc.pid, signal.SIGKILL))  # a hang fails, never blocks
    timer.start()
    try:
        for line in proc.stdout:
            lines.append(line.strip())
            if any(x.startswith("steps ") for x in lines) and any(x.startswith("Time ") for x in lines):
                break
    finally:
        timer.cancel()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    summary = [line for line in lines if line.startswith("steps ")]
    assert summary and any(re.match(r"Time .*episode reward", line) for line in lines), lines
    _, steps, _, updates, _, changed = summary[0].split()
    assert int(steps) >= 300 and int(updates) >= 300 // 20 and changed == "True"

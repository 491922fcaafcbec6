"""The requirement files: one machine needs no Ray; --ray-address without Ray says what to install."""

import argparse
import importlib.util
import subprocess
import sys

import pytest

from a3c_extras import cli
from conftest import ROOT
from helpers import own_lines

# main.py as a user without Ray runs it: sys.modules["ray"] = None makes `import ray` fail and find_spec say None.
WITHOUT_RAY = (
    "import runpy, sys; sys.modules['ray'] = None; sys.argv[0] = 'main.py'; "
    "runpy.run_path('main.py', run_name='__main__')"
)


def requirements(name: str) -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_one_machine_needs_no_ray_and_the_cluster_and_tests_do():
    assert not any(line.startswith("ray") for line in requirements("requirements.txt"))
    assert requirements("requirements-cluster.txt") == ["-r requirements.txt", "ray==2.60.0"]
    dev = requirements("requirements-dev.txt")
    assert dev[0] == "-r requirements-cluster.txt"
    assert {line.split("==")[0] for line in dev[1:]} >= {"pytest", "ruff"}
    assert all("==" in line for line in dev[1:]), "every tool pinned"


def test_a_missing_ray_is_found_without_importing_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    for address in ("local", "auto", "10.0.0.1:6379"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"pip install -r requirements-cluster\.txt"):
            cli.ray_address(address)


@pytest.mark.parametrize("address", ["local", "127.0.0.1:6379"])
def test_ray_address_without_ray_says_what_to_install_in_one_line(address):
    argv = ["--ray-address", address, "--num-processes", "1"]
    out = subprocess.run(
        [sys.executable, "-c", WITHOUT_RAY, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    lines = own_lines(out.stderr)
    assert out.returncode == 2, out.stderr
    assert len(lines) == 1 and "pip install -r requirements-cluster.txt" in lines[0], out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""

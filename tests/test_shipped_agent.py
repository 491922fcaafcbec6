"""The shipped agent: it loads safely and plays; the README's evaluation command runs as written."""

import re
import subprocess
import sys

import torch

from a3c_extras.atari import options
from a3c_extras.evaluation import play_episode
from conftest import ROOT
from envs import create_atari_env
from model import ActorCritic

PRETRAINED = ROOT / "pretrained" / "breakout.pt"


def test_shipped_checkpoint_loads_with_weights_only_and_plays():
    data = torch.load(PRETRAINED, map_location="cpu", weights_only=True)
    env = create_atari_env(data["args"]["env_name"], link=options(fire_reset=data["args"]["fire_reset"]))
    model = ActorCritic(env.observation_space.shape[0], env.action_space)
    model.load_state_dict(data["model"])
    model.eval()
    env.reset(seed=0)
    reward, length, cut_short = play_episode(env, model, 2000)
    assert length > 0 and reward >= 0 and not cut_short


def test_readme_results_command_runs_as_written():
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"^python test\.py --checkpoint pretrained/breakout\.pt .*$", readme, re.MULTILINE).group(0)
    # The full 10-episode evaluation takes minutes: one episode checks that the command works as written.
    argv = command.split()[1:]
    argv[argv.index("--episodes") + 1] = "1"
    out = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert re.search(r"^Summary: 1 episodes \(1 different\), mean [\d.]+", out.stdout, re.MULTILINE), out.stdout

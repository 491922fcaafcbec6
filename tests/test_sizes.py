"""The opt-in sizes (--frame-size, --lstm-size, a3c_extras/sizes.py): the flags and their defaults, the
frames create_atari_env makes on both rollouts, a resumed run that keeps its network (and refuses
another), and the overlay of an 80x80 input."""

import numpy as np
import pytest
import torch
from gymnasium.spaces import Discrete

from a3c_extras import overlay, supervision
from a3c_extras.atari import options
from a3c_extras.checkpoints import checkpoint, save_checkpoint
from envs import create_atari_env
from helpers import params_from, shared_model_and_optimizer
from model import ActorCritic

LARGER = ["--frame-size", "80", "--lstm-size", "512"]


def refusal(capsys, argv) -> list[str]:
    """main.py's command line refusing argv: exit status 2 and the lines it wrote on stderr."""
    with pytest.raises(SystemExit) as exit_:
        params_from(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err.splitlines()


def test_the_defaults_are_the_course_s_sizes():
    params = params_from([])
    assert (params.frame_size, params.lstm_size) == (42, 256)
    params = params_from(LARGER)
    assert (params.frame_size, params.lstm_size) == (80, 512)


@pytest.mark.parametrize("argv", [["--frame-size", "64"], ["--frame-size", "big"], ["--lstm-size", "0"]])
def test_other_sizes_are_refused_in_one_line(capsys, argv):
    lines = refusal(capsys, argv)
    assert len(lines) == 1 and lines[0].startswith(f"main.py: error: argument {argv[0]}"), lines


@pytest.mark.parametrize("rollout", ["fast", "classic"])
@pytest.mark.parametrize("frame_size", [42, 80])
def test_create_atari_env_makes_the_frames_of_the_run_s_size(rollout, frame_size):
    env = create_atari_env("BreakoutDeterministic-v4", link=options(frame_size=frame_size, rollout=rollout))
    observation, _ = env.reset(seed=0)
    assert observation.shape == env.observation_space.shape == (1, frame_size, frame_size)
    assert observation.dtype == np.float32


def saved_run(tmp_path, argv, old: bool = False):
    """A run directory whose checkpoint holds a network of argv's sizes (random weights, step 100); `old`:
    its arguments from before the sizes were options (the course's sizes, not named)."""
    args = params_from([*argv, "--run-dir", str(tmp_path)])
    model = ActorCritic(1, Discrete(4), frame_size=args.frame_size, lstm_size=args.lstm_size)
    data = checkpoint(model, None, 100, 0, None, args)
    if old:
        data["args"] = {k: v for k, v in data["args"].items() if k not in ("frame_size", "lstm_size")}
    save_checkpoint(tmp_path / "checkpoint.pt", data)
    return model


def test_a_resumed_run_keeps_its_network_s_sizes(tmp_path):
    """--resume: the saved sizes are the run's, and its weights load into the shared model main.py builds."""
    saved = saved_run(tmp_path, LARGER)
    args = params_from(["--resume", str(tmp_path), "--no-tensorboard", "--num-processes", "1"])
    assert (args.frame_size, args.lstm_size) == (80, 512)
    env = create_atari_env(args.env_name, link=options(frame_size=args.frame_size))
    shared_model, optimizer = shared_model_and_optimizer(args, env)
    supervision.Run(args, shared_model, optimizer)
    for name, tensor in saved.state_dict().items():
        assert torch.equal(shared_model.state_dict()[name], tensor), name


@pytest.mark.parametrize(
    "saved_flags, old, flags, says",
    [
        (LARGER, False, ["--frame-size", "42"], "--frame-size 42 does not fit"),
        (LARGER, False, ["--lstm-size", "256"], "--lstm-size 256 does not fit"),
        ([], True, ["--frame-size", "80"], "its network has 42x42 frames and an LSTM of 256"),
    ],
)
def test_resuming_with_other_sizes_is_refused_in_one_line(tmp_path, capsys, saved_flags, old, flags, says):
    saved_run(tmp_path, saved_flags, old)
    lines = refusal(capsys, ["--resume", str(tmp_path), *flags])
    assert len(lines) == 1 and lines[0].startswith("main.py: error: ") and says in lines[0], lines


def test_the_overlay_shows_an_80x80_input_at_twice_its_size():
    screen = np.zeros((210, 160, 3), np.uint8)
    observation = np.zeros((1, 80, 80), np.float32)
    frame = overlay.compose_frame(screen, observation, np.full(4, 0.25), 0.0, ["NOOP", "FIRE", "RIGHT", "LEFT"])
    assert frame.shape[0] == 210
    panel = overlay.input_panel(observation, 210)
    assert panel.shape[1] == 160 + 2 * overlay.MARGIN  # 80 x 2, between its margins
    assert overlay.input_panel(np.zeros((1, 42, 42), np.float32), 210).shape[1] == 168 + 2 * overlay.MARGIN

import copy
import math

import pytest
import torch
from gymnasium.spaces import Discrete

from a3c_extras.fast_rollout import Rollout
from model import ActorCritic

FOUR = Discrete(4)  # Breakout's action space


def test_forward_shapes_for_a_batch():
    model = ActorCritic(1, FOUR)
    hx, cx = torch.zeros(5, 256), torch.zeros(5, 256)
    value, logits, (hx, cx) = model((torch.randn(5, 1, 42, 42), (hx, cx)))
    assert value.shape == (5, 1)
    assert logits.shape == (5, 4)
    assert hx.shape == cx.shape == (5, 256)


@pytest.mark.parametrize("frame_size, lstm_size", [(42, 256), (80, 512)], ids=["course", "80x80-lstm512"])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_rollout_acts_as_forward_step_by_step(memory_format, frame_size, lstm_size):
    """Rollout.act (the workers' fast path) computes what forward() computes, step after step."""
    torch.manual_seed(0)
    model = ActorCritic(1, FOUR, frame_size=frame_size, lstm_size=lstm_size)
    reference = copy.deepcopy(model)  # forward as the course wrote it (its view needs contiguous tensors)
    model = model.to(memory_format=memory_format)
    frames = torch.randn(7, 1, frame_size, frame_size)
    hx, cx = torch.randn(1, lstm_size), torch.randn(1, lstm_size)
    rollout = Rollout(model, 7, hx.numpy(), cx.numpy())
    for t in range(7):
        logits = rollout.act(frames[t : t + 1], [0])
        with torch.no_grad():
            value, logit, (hx, cx) = reference((frames[t : t + 1], (hx, cx)))
        torch.testing.assert_close(torch.from_numpy(logits), logit)
        torch.testing.assert_close(torch.tensor(rollout.values([0])), value[0])
        h, c = rollout.lstm_state(0, t + 1)
        torch.testing.assert_close(torch.from_numpy(h), hx[0])
        torch.testing.assert_close(torch.from_numpy(c), cx[0])
    assert rollout.ticks == 7


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_rollout_acts_on_several_games_as_forward_on_each(memory_format):
    """K games in one batch, some stopping early: each game's logits, values and LSTM state are what
    forward() computes on that game alone."""
    torch.manual_seed(0)
    model = ActorCritic(1, FOUR)
    reference = copy.deepcopy(model)
    model = model.to(memory_format=memory_format)
    games, ticks = 4, 6
    frames = torch.randn(ticks, games, 1, 42, 42)
    hx, cx = torch.randn(games, 256), torch.randn(games, 256)
    rollout = Rollout(model, ticks, hx.numpy(), cx.numpy())
    playing = list(range(games))
    for t in range(ticks):
        if t in (2, 4):
            playing = playing[1:] if t == 2 else [playing[0], playing[2]]  # games stop: 0, then 2
        logits = rollout.act(frames[t, playing], playing)
        for row, k in enumerate(playing):
            with torch.no_grad():
                value, logit, (h, c) = reference((frames[t, k : k + 1], (hx[k : k + 1], cx[k : k + 1])))
            hx[k], cx[k] = h[0], c[0]
            torch.testing.assert_close(torch.from_numpy(logits[row]), logit[0])
            torch.testing.assert_close(torch.from_numpy(rollout.lstm_state(k, t + 1)[0]), h[0])
            torch.testing.assert_close(torch.from_numpy(rollout.lstm_state(k, t + 1)[1]), c[0])
        torch.testing.assert_close(torch.tensor(rollout.values(playing)), reference.critic_linear(hx[playing])[:, 0])
    assert playing == [1, 3]


def test_flattened_conv_features_are_288():
    model = ActorCritic(1, FOUR)
    x = torch.zeros(2, 1, 42, 42)
    for conv in (model.conv1, model.conv2, model.conv3, model.conv4):
        x = conv(x)
    assert x.shape == (2, 32, 3, 3)
    assert model.lstm.input_size == 288 and model.lstm.hidden_size == 256


COURSE_SHAPES = {
    "conv1.weight": (32, 1, 3, 3),
    "conv2.weight": (32, 32, 3, 3),
    "conv3.weight": (32, 32, 3, 3),
    "conv4.weight": (32, 32, 3, 3),
    "lstm.weight_ih": (4 * 256, 288),
    "lstm.weight_hh": (4 * 256, 256),
    "critic_linear.weight": (1, 256),
    "actor_linear.weight": (4, 256),
}


def test_the_default_network_is_the_course_s_and_draws_the_same_weights():
    """Without the opt-in sizes (and with the course's values given) the network is the course's: its
    shapes, and for a seed the same weights, so the shipped checkpoint and the fidelity tests hold."""
    torch.manual_seed(3)
    default = ActorCritic(1, FOUR).state_dict()
    torch.manual_seed(3)
    explicit = ActorCritic(1, FOUR, frame_size=42, lstm_size=256).state_dict()
    assert default.keys() == explicit.keys()
    for name, tensor in default.items():
        assert torch.equal(tensor, explicit[name]), name
    assert {name: tuple(default[name].shape) for name in COURSE_SHAPES} == COURSE_SHAPES


@pytest.mark.parametrize("frame_size, lstm_size, side", [(42, 512, 3), (80, 256, 5), (80, 512, 5)])
def test_the_lstm_reads_what_the_convolutions_make_of_the_frame_size(frame_size, lstm_size, side):
    """80x80 frames: 80 -> 40 -> 20 -> 10 -> 5, 32 x 5 x 5 = 800 features into the LSTM; the heads read
    the LSTM's hidden state, of --lstm-size."""
    model = ActorCritic(1, FOUR, frame_size=frame_size, lstm_size=lstm_size)
    x = torch.zeros(2, 1, frame_size, frame_size)
    for conv in (model.conv1, model.conv2, model.conv3, model.conv4):
        x = conv(x)
    assert x.shape == (2, 32, side, side)
    assert model.lstm.input_size == 32 * side * side and model.lstm.hidden_size == lstm_size
    assert model.critic_linear.in_features == model.actor_linear.in_features == lstm_size
    hx = cx = torch.zeros(5, lstm_size)
    value, logits, (hx, cx) = model((torch.randn(5, 1, frame_size, frame_size), (hx, cx)))
    assert value.shape == (5, 1) and logits.shape == (5, 4) and hx.shape == cx.shape == (5, lstm_size)
    torch.testing.assert_close(model.actor_linear.weight.norm(dim=1), torch.full((4,), 0.01))


def test_glorot_bounds_and_zero_biases():
    torch.manual_seed(1)
    model = ActorCritic(1, FOUR)
    for name in ["conv1", "conv2", "conv3", "conv4"]:
        conv = getattr(model, name)
        out_ch, in_ch, kh, kw = conv.weight.shape
        bound = math.sqrt(6.0 / (in_ch * kh * kw + out_ch * kh * kw))
        # Uniform in [-bound, bound]: the extremes come close to the bound, never past it.
        assert conv.weight.abs().max() <= bound
        assert conv.weight.abs().max() >= 0.9 * bound
        assert torch.all(conv.bias == 0)
    for bias in [model.lstm.bias_ih, model.lstm.bias_hh, model.actor_linear.bias, model.critic_linear.bias]:
        assert torch.all(bias == 0)


def test_actor_and_critic_rows_have_normalized_norms():
    model = ActorCritic(1, FOUR)
    torch.testing.assert_close(model.actor_linear.weight.norm(dim=1), torch.full((4,), 0.01))
    torch.testing.assert_close(model.critic_linear.weight.norm(dim=1), torch.full((1,), 1.0))


def test_initial_policy_is_near_uniform():
    model = ActorCritic(1, FOUR)
    _, logits, _ = model((torch.randn(3, 1, 42, 42), (torch.zeros(3, 256), torch.zeros(3, 256))))
    probs = torch.softmax(logits, dim=-1)
    assert torch.allclose(probs, torch.full_like(probs, 0.25), atol=0.01)


def test_course_attribute_names():
    names = {k.split(".")[0] for k in ActorCritic(1, FOUR).state_dict()}
    assert names == {"conv1", "conv2", "conv3", "conv4", "lstm", "critic_linear", "actor_linear"}

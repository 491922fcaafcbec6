"""The A3C network of the course: four conv layers, an LSTM cell, an actor head and a critic head."""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def normalized_columns_initializer(weights: torch.Tensor, std: float = 1.0) -> torch.Tensor:
    """Gaussian weights whose rows (one per output unit) are rescaled to norm `std`."""
    out = torch.randn(weights.size())
    out *= std / torch.sqrt(out.pow(2).sum(1, keepdim=True))
    return out


def weights_init(m: nn.Module) -> None:
    """Glorot-uniform weights, bound sqrt(6 / (fan_in + fan_out)), and zero biases."""
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        weight_shape = list(m.weight.data.size())
        fan_in = np.prod(weight_shape[1:4])  # in_channels * kernel_h * kernel_w
        fan_out = np.prod(weight_shape[2:4]) * weight_shape[0]  # kernel_h * kernel_w * out_channels
        w_bound = np.sqrt(6.0 / (fan_in + fan_out))
        m.weight.data.uniform_(-w_bound, w_bound)
        m.bias.data.fill_(0)
    elif classname.find("Linear") != -1:
        weight_shape = list(m.weight.data.size())
        fan_in = weight_shape[1]
        fan_out = weight_shape[0]
        w_bound = np.sqrt(6.0 / (fan_in + fan_out))
        m.weight.data.uniform_(-w_bound, w_bound)
        m.bias.data.fill_(0)


class ActorCritic(nn.Module):
    """Input 1x42x42 -> 4 x (conv 3x3 stride 2, ELU) -> 32*3*3 -> LSTMCell(256) -> value and policy logits."""

    def __init__(self, num_inputs: int, num_actions: int):
        super().__init__()
        self.conv1 = nn.Conv2d(num_inputs, 32, 3, stride=2, padding=1)  # 42 -> 21
        self.conv2 = nn.Conv2d(32, 32, 3, stride=2, padding=1)  # 21 -> 11
        self.conv3 = nn.Conv2d(32, 32, 3, stride=2, padding=1)  # 11 -> 6
        self.conv4 = nn.Conv2d(32, 32, 3, stride=2, padding=1)  # 6 -> 3
        self.lstm = nn.LSTMCell(32 * 3 * 3, 256)
        self.critic_linear = nn.Linear(256, 1)  # V(s)
        self.actor_linear = nn.Linear(256, num_actions)  # logits of pi(a|s)

        self.apply(weights_init)
        # Small actor weights start the policy near uniform; the critic starts at unit scale.
        self.actor_linear.weight.data = normalized_columns_initializer(self.actor_linear.weight.data, 0.01)
        self.actor_linear.bias.data.fill_(0)
        self.critic_linear.weight.data = normalized_columns_initializer(self.critic_linear.weight.data, 1.0)
        self.critic_linear.bias.data.fill_(0)
        self.lstm.bias_ih.data.fill_(0)
        self.lstm.bias_hh.data.fill_(0)
        self.train()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The convolutional "eyes": a batch of frames to a batch of 288 features."""
        x = F.elu(self.conv1(x))
        x = F.elu(self.conv2(x))
        x = F.elu(self.conv3(x))
        x = F.elu(self.conv4(x))
        return x.reshape(x.size(0), -1)  # reshape, not view: a channels-last x is flattened by a copy

    def forward(self, inputs):
        """One time step: (frames, (hx, cx)) -> (value, logits, (hx, cx))."""
        x, (hx, cx) = inputs
        hx, cx = self.lstm(self.features(x), (hx, cx))
        return self.critic_linear(hx), self.actor_linear(hx), (hx, cx)

    def act(self, x: torch.Tensor, hx: torch.Tensor, cx: torch.Tensor):
        """One acting step of a worker (call it under torch.inference_mode): the policy logits and the
        next LSTM state. The same operations as forward() without the critic head, which acting does
        not need (the values of the states played are computed afterwards, by forward_sequence).

        Acting sees one frame at a time, so the fixed cost of each call counts as much as the
        arithmetic: the layers are applied through their functional forms on the modules' own
        weights (no nn.Module call machinery), and each ELU overwrites its input (no new tensor)."""
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = F.elu_(F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding))
        lstm = self.lstm
        hx, cx = torch.lstm_cell(x.reshape(x.size(0), -1), (hx, cx), lstm.weight_ih, lstm.weight_hh,
                                 lstm.bias_ih, lstm.bias_hh)
        return F.linear(hx, self.actor_linear.weight, self.actor_linear.bias), (hx, cx)

    def forward_sequence(self, frames: torch.Tensor, hx: torch.Tensor, cx: torch.Tensor):
        """A whole rollout at once: T frames -> T values, T logits and the last LSTM state.
        The same numbers as T calls of forward() (up to float rounding), far fewer operator calls:

        - the convs see all T frames in one batch;
        - the LSTM steps through them in order inside one fused operator, torch.lstm (what
          nn.LSTM.forward calls), given the cell's own weights: LSTMCell and LSTM share the gate
          layout (input, forget, cell, output). On CPU its forward and backward run the T steps in
          native code, several times faster than T LSTMCell calls and their T small backward steps.
        """
        features = self.features(frames)  # (T, 288)
        weights = (self.lstm.weight_ih, self.lstm.weight_hh, self.lstm.bias_ih, self.lstm.bias_hh)
        # Arguments: input (T, batch 1, 288), initial state (layers 1, batch 1, 256) each, weights,
        # has_biases, num_layers, dropout, train, bidirectional, batch_first.
        hidden, hx, cx = torch.lstm(features.unsqueeze(1), (hx.unsqueeze(0), cx.unsqueeze(0)), weights,
                                    True, 1, 0.0, self.training, False, False)
        hidden = hidden.squeeze(1)  # (T, 256): h_t for every step
        return self.critic_linear(hidden), self.actor_linear(hidden), (hx.squeeze(0), cx.squeeze(0))

# AI for Breakout
"""The course's model.py: four convolutions, an LSTM cell, and two heads on its output, the critic
(V(s)) and the actor (the scores of pi(a|s), action_values). Lines marked #+ are not the course's
(docs/course.md says why)."""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from a3c_extras import sizes  #+ the opt-in sizes: --frame-size, --lstm-size (a3c_extras/sizes.py)


# Initializing and setting the variance of a tensor of weights
def normalized_columns_initializer(weights, std=1.0):
    out = torch.randn(weights.size())
    out *= std / torch.sqrt(out.pow(2).sum(1, keepdim=True).expand_as(out))  #+ keepdim: no longer the default
    return out


# Initializing the weights of the neural network in an optimal way for the learning
def weights_init(m):
    classname = m.__class__.__name__
    if classname.find('Conv') != -1:
        weight_shape = list(m.weight.data.size())
        fan_in = np.prod(weight_shape[1:4])
        fan_out = np.prod(weight_shape[2:4]) * weight_shape[0]
        w_bound = np.sqrt(6. / (fan_in + fan_out))
        m.weight.data.uniform_(-w_bound, w_bound)
        m.bias.data.fill_(0)
    elif classname.find('Linear') != -1:
        weight_shape = list(m.weight.data.size())
        fan_in = weight_shape[1]
        fan_out = weight_shape[0]
        w_bound = np.sqrt(6. / (fan_in + fan_out))
        m.weight.data.uniform_(-w_bound, w_bound)
        m.bias.data.fill_(0)


# Making the A3C brain
class ActorCritic(torch.nn.Module):

    def __init__(self, num_inputs, action_space, frame_size=42, lstm_size=256):  #+ opt-in sizes; the course's by default
        super(ActorCritic, self).__init__()
        self.conv1 = nn.Conv2d(num_inputs, 32, 3, stride=2, padding=1)  # 42 -> 21
        self.conv2 = nn.Conv2d(32, 32, 3, stride=2, padding=1)  # 21 -> 11
        self.conv3 = nn.Conv2d(32, 32, 3, stride=2, padding=1)  # 11 -> 6
        self.conv4 = nn.Conv2d(32, 32, 3, stride=2, padding=1)  # 6 -> 3
        self.lstm = nn.LSTMCell(sizes.flattened_size(self, frame_size), lstm_size)  #+ 32 * 3 * 3, 256 for the course's sizes
        num_outputs = action_space.n
        self.critic_linear = nn.Linear(lstm_size, 1)  #+ 256: --lstm-size
        self.actor_linear = nn.Linear(lstm_size, num_outputs)  #+
        self.apply(weights_init)
        # Small actor weights start the policy near uniform; the critic starts at unit scale.
        self.actor_linear.weight.data = normalized_columns_initializer(self.actor_linear.weight.data, 0.01)
        self.actor_linear.bias.data.fill_(0)
        self.critic_linear.weight.data = normalized_columns_initializer(self.critic_linear.weight.data, 1.0)
        self.critic_linear.bias.data.fill_(0)
        self.lstm.bias_ih.data.fill_(0)
        self.lstm.bias_hh.data.fill_(0)
        self.train()

    def forward(self, inputs):
        inputs, (hx, cx) = inputs
        x = F.elu(self.conv1(inputs))
        x = F.elu(self.conv2(x))
        x = F.elu(self.conv3(x))
        x = F.elu(self.conv4(x))
        x = x.view(-1, self.lstm.input_size)  #+ 32 * 3 * 3 for the course's 42x42 frames
        hx, cx = self.lstm(x, (hx, cx))
        x = hx
        return self.critic_linear(x), self.actor_linear(x), (hx, cx)

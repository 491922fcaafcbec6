"""The workers' fast path, network side: act one frame at a time keeping what each step computed, then
learn from it with a backward pass written out, with no second forward pass.

The weights do not change during a rollout, so the activations a worker computes while acting are
exactly those a forward pass with gradients would compute again afterwards. Rollout keeps them, and
hidden_states gives the LSTM's outputs a backward pass: through time for the LSTM, then through the four
convolutions. tests/test_equivalence.py checks the losses and gradients against the course's loop."""

import numpy as np
import torch
import torch.nn.functional as F


def convs(model) -> tuple:
    return (model.conv1, model.conv2, model.conv3, model.conv4)


def trunk_weights(model) -> list:
    """The weights between the frames and the LSTM's output, in the order HiddenStates returns their gradients."""
    return [p for conv in convs(model) for p in (conv.weight, conv.bias)] + [
        model.lstm.weight_ih, model.lstm.weight_hh, model.lstm.bias_ih, model.lstm.bias_hh]


def sample_action(logits: np.ndarray, noise: torch.Tensor) -> int:
    """Draw a ~ pi(.|s) = softmax(logits) for one state, exactly as probs.multinomial(num_samples=1)
    in the course's loop: for one sample PyTorch's multinomial computes argmax(p / q), q ~ Exp(1)
    (the Gumbel-max trick). Written out it draws the same random numbers from torch's generator, so a
    seed plays the same actions in both loops. `noise` is a buffer for q, one entry per action;
    argmax ignores softmax's normalisation, which is skipped."""
    probs = np.exp(logits - logits.max())
    return int((probs / noise.exponential_().numpy()).argmax())


class Rollout:
    """Acts with a model one frame at a time and keeps what each step computed for the backward pass.

    Row t of the arrays belongs to step t (the frame s_t); hx[t] and cx[t] hold the LSTM state the step
    starts from, so hx[t + 1] is h_t. The LSTM runs in NumPy on views of the model's own weights: a
    step multiplies 1 MB matrices by vectors, which is memory-bound, and NumPy's BLAS (OpenBLAS) does
    that in about half the time of PyTorch's CPU build (MKL), measured on an AMD EPYC processor."""

    def __init__(self, model, num_steps: int, hx: torch.Tensor, cx: torch.Tensor):
        self.model = model
        lstm = model.lstm
        rows = num_steps + 2  # the steps played, one more for the bootstrap value, the state after it
        self.frames = []  # s_t, each (1, 1, 42, 42)
        self.conv_outputs = [[] for _ in range(4)]  # per conv layer: its output after ELU, per step
        self.features = np.empty((rows, lstm.input_size), np.float32)  # x_t, the LSTM's input
        self.gates = np.empty((rows, 4 * lstm.hidden_size), np.float32)  # i, f, g, o after squashing
        self.tanh_cx = np.empty((rows, lstm.hidden_size), np.float32)  # tanh(c_t)
        self.hx = np.empty((rows, lstm.hidden_size), np.float32)
        self.cx = np.empty((rows, lstm.hidden_size), np.float32)
        self.hx[0], self.cx[0] = hx.detach().numpy(), cx.detach().numpy()
        self.steps = 0
        # NumPy views of the weights (no copies): they stay valid while the model is updated in place.
        self.w_ih, self.w_hh = lstm.weight_ih.detach().numpy(), lstm.weight_hh.detach().numpy()
        self.bias = (lstm.bias_ih + lstm.bias_hh).detach().numpy()
        self.w_actor, self.b_actor = (p.detach().numpy() for p in model.actor_linear.parameters())
        self.w_critic, self.b_critic = (p.detach().numpy() for p in model.critic_linear.parameters())
        # Per gate (i, f, g, o): the scale and shift that turn tanh into sigmoid for i, f and o (see act).
        self.gate_scale = np.repeat(np.float32([0.5, 0.5, 1.0, 0.5]), lstm.hidden_size)
        self.gate_shift = np.repeat(np.float32([0.5, 0.5, 0.0, 0.5]), lstm.hidden_size)

    @torch.inference_mode()
    def act(self, frame: torch.Tensor) -> np.ndarray:
        """The forward pass on one frame s_t (1, 42, 42): returns the policy's logits."""
        t = self.steps
        x = frame.unsqueeze(0)
        self.frames.append(x)
        for conv, outputs in zip(convs(self.model), self.conv_outputs):
            x = F.elu_(F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding))  # ELU in place
            outputs.append(x)
        self.features[t] = x.reshape(-1).numpy()  # flattened in (channel, row, column) order, as forward's view
        # LSTM cell: the four gates W_ih x_t + W_hh h_{t-1} + b in the order input, forget, cell, output.
        gates = self.gates[t]
        np.matmul(self.w_ih, self.features[t], out=gates)
        gates += self.w_hh @ self.hx[t]
        gates += self.bias
        # Squash them, sigmoid for i, f, o and tanh for g, with one tanh over all four:
        # sigmoid(z) = 0.5 * tanh(0.5 * z) + 0.5 (which no large |z| overflows), tanh(z) = 1 * tanh(1 * z) + 0.
        gates *= self.gate_scale
        np.tanh(gates, out=gates)
        gates *= self.gate_scale
        gates += self.gate_shift
        i, f, g, o = gates.reshape(4, -1)  # views
        c = self.cx[t + 1]
        np.multiply(f, self.cx[t], out=c)  # c_t = f * c_{t-1} + i * g
        c += i * g
        np.tanh(c, out=self.tanh_cx[t])
        np.multiply(o, self.tanh_cx[t], out=self.hx[t + 1])  # h_t = o * tanh(c_t)
        self.steps += 1
        return self.w_actor @ self.hx[t + 1] + self.b_actor

    def value(self) -> float:
        """The critic's V(s) of the last frame acted on."""
        return float((self.w_critic @ self.hx[self.steps] + self.b_critic)[0])

    def lstm_state(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, c) after t steps, as (1, 256) tensors of their own."""
        return torch.tensor(self.hx[t]).unsqueeze(0), torch.tensor(self.cx[t]).unsqueeze(0)


class HiddenStates(torch.autograd.Function):
    """The hidden states h_0..h_{T-1} of a rollout's first T steps as a function of the trunk's weights
    (the four convolutions and the LSTM). Forward returns what acting computed; backward is
    backpropagation through the LSTM (through time) and then through the convolutions."""

    @staticmethod
    def forward(ctx, rollout: Rollout, steps: int, *trunk_weights):
        ctx.rollout, ctx.steps = rollout, steps
        return torch.from_numpy(rollout.hx[1 : steps + 1])

    @staticmethod
    def backward(ctx, grad_hidden):
        rollout, steps = ctx.rollout, ctx.steps
        lstm_grads, grad_features = lstm_backward(rollout, steps, grad_hidden.numpy())
        conv_grads = conv_backward(rollout, steps, torch.from_numpy(grad_features))
        return None, None, *conv_grads, *lstm_grads


def hidden_states(rollout: Rollout, steps: int) -> torch.Tensor:
    """h_t for the first `steps` steps of the rollout, (steps, 256), with the trunk's gradients."""
    return HiddenStates.apply(rollout, steps, *trunk_weights(rollout.model))


def lstm_backward(rollout: Rollout, steps: int, grad_hidden: np.ndarray):
    """Backpropagation through time of the LSTM cell, from dL/dh_t of each step.

    Per step, from h = o * tanh(c) and c = f * c_prev + i * g: dc gathers dh * o * (1 - tanh(c)^2) and
    what flows back from the next step (dc_next * f_next); the gates before squashing get
    dc * g * i(1 - i), dc * c_prev * f(1 - f), dc * i * (1 - g^2) and dh * tanh(c) * o(1 - o);
    dh_prev = W_hh^T dgates. The weight gradients are then sums over the steps: one matrix product each.
    Returns the gradients of (W_ih, W_hh, b_ih, b_hh) and dL/dx_t, the gradient of the conv features."""
    hidden = rollout.hx.shape[1]
    i, f, g, o = (rollout.gates[:steps, k * hidden : (k + 1) * hidden] for k in range(4))
    c_prev, tanh_c = rollout.cx[:steps], rollout.tanh_cx[:steps]
    # How much each gate's input moves the loss per unit of dc (input, forget, cell) or of dh (output).
    per_dc = np.concatenate([g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g)], axis=1)
    per_dh = tanh_c * o * (1 - o)
    dc_per_dh = o * (1 - tanh_c * tanh_c)
    grad_gates = np.empty((steps, 4 * hidden), np.float32)
    dh, dc = np.zeros(hidden, np.float32), np.zeros(hidden, np.float32)
    for t in reversed(range(steps)):
        dh += grad_hidden[t]
        dc += dh * dc_per_dh[t]
        np.multiply(per_dc[t].reshape(3, hidden), dc, out=grad_gates[t, : 3 * hidden].reshape(3, hidden))
        np.multiply(per_dh[t], dh, out=grad_gates[t, 3 * hidden :])
        dc *= f[t]  # to c_{t-1}
        dh = grad_gates[t] @ rollout.w_hh  # to h_{t-1}
    grad_w_ih = grad_gates.T @ rollout.features[:steps]
    grad_w_hh = grad_gates.T @ rollout.hx[:steps]
    grad_bias = grad_gates.sum(axis=0)
    grads = (grad_w_ih, grad_w_hh, grad_bias, grad_bias.copy())  # b_ih and b_hh enter the gates alike
    return [torch.from_numpy(grad) for grad in grads], grad_gates @ rollout.w_ih


def conv_backward(rollout: Rollout, steps: int, grad_features: torch.Tensor) -> list[torch.Tensor]:
    """Backpropagation through the four conv + ELU layers for all steps at once, from dL/dx_t.
    Returns the gradients of (conv1.weight, conv1.bias, ..., conv4.bias)."""
    inputs = [torch.cat(rollout.frames[:steps])] + [torch.cat(outputs[:steps]) for outputs in rollout.conv_outputs]
    # The gradients take the activations' memory layout (channels-last in the workers): with mixed
    # layouts every operator below would first reorder its inputs, at several times the cost.
    grad = torch.empty_like(inputs[-1]).copy_(grad_features.view(inputs[-1].shape))
    grads = []
    for k in reversed(range(4)):
        conv, x, y = convs(rollout.model)[k], inputs[k], inputs[k + 1]
        # ELU'(z) = 1 for z > 0, else e^z = ELU(z) + 1: computed from the output y = ELU(z).
        grad = torch.ops.aten.elu_backward(grad, 1.0, 1.0, 1.0, True, y)
        grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad, x, conv.weight, [conv.out_channels], conv.stride, conv.padding, conv.dilation,
            False, [0, 0], 1, [k > 0, True, True])  # no gradient for the frames themselves
        grads[:0] = [grad_w, grad_b]
        grad = grad_x
    return grads

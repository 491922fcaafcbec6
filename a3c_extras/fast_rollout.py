"""The workers' fast path, network side: act on the frames of K games at once (one batched forward pass
per tick), keeping what each step computed, then learn from it with a backward pass written out, with
no second forward pass. K = 1 (the default) is the course's one game per worker.

The weights do not change during a rollout, so the activations a worker computes while acting are
exactly those a forward pass with gradients would compute again afterwards. Rollout keeps them, and
hidden_states gives the LSTM's outputs a backward pass: through time for the LSTM, then through the four
convolutions. tests/test_fast_path.py checks the losses and gradients against the course's loop."""

import numpy as np
import torch
import torch.nn.functional as F


def convs(model) -> tuple:
    return (model.conv1, model.conv2, model.conv3, model.conv4)


def trunk_weights(model) -> list:
    """The weights between the frames and the LSTM's output, in the order HiddenStates returns their gradients."""
    return [p for conv in convs(model) for p in (conv.weight, conv.bias)] + [
        model.lstm.weight_ih,
        model.lstm.weight_hh,
        model.lstm.bias_ih,
        model.lstm.bias_hh,
    ]


def output_size(frames: torch.Tensor, conv) -> tuple[int, int]:
    """The height and width of conv(frames)."""
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    return (frames.shape[2] + 2 * ph - kh) // sh + 1, (frames.shape[3] + 2 * pw - kw) // sw + 1


def patches(frames: torch.Tensor, conv, out: torch.Tensor) -> torch.Tensor:
    """The input windows the first convolution sees, (n, channels * kh * kw, positions), in the order of
    conv.weight's elements (channel, row, column): F.unfold's layout, made with one strided copy into
    `out`."""
    n, channels = frames.shape[:2]
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    padded = F.pad(frames, (pw, pw, ph, ph)).contiguous()
    rows, row_stride = padded.shape[2], padded.shape[3]
    out_h, out_w = output_size(frames, conv)
    windows = padded.as_strided(
        (n, channels, kh, kw, out_h, out_w),
        (channels * rows * row_stride, rows * row_stride, row_stride, 1, sh * row_stride, sw),
    )
    out.view(windows.shape).copy_(windows)
    return out


def first_conv(windows: torch.Tensor, conv, out: torch.Tensor) -> torch.Tensor:
    """The first convolution from its input windows (n, 9, positions; `patches`) into `out` (n, 32, h, w),
    channels-last, as one batched matrix product. With one input channel the convolution is a product of
    9 x 441 windows with a 9 x 32 matrix per frame, which a matrix product does several times faster than
    PyTorch's convolution kernel (the same sums)."""
    n, out_channels = len(windows), conv.out_channels
    weight = conv.weight.reshape(out_channels, -1).t().expand(n, -1, -1)  # (n, 9, 32)
    positions = out.permute(0, 2, 3, 1).view(n, -1, out_channels)  # (n, positions, 32): out's memory
    torch.baddbmm(conv.bias, windows.transpose(1, 2), weight, out=positions)
    return out


def sample_actions(logits: np.ndarray, noise: torch.Tensor) -> list[int]:
    """Draw a ~ pi(.|s) = softmax(logits) for each row of logits, exactly as probs.multinomial(num_samples=1)
    in the course's loop: for one sample PyTorch's multinomial computes argmax(p / q), q ~ Exp(1)
    (the Gumbel-max trick). Written out it draws the same random numbers from torch's generator, so a
    seed plays the same actions in both loops. `noise` is a buffer for q, a row per game; argmax
    ignores softmax's normalisation, which is skipped."""
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (probs / noise[: len(logits)].exponential_().numpy()).argmax(axis=1).tolist()


class Rollout:
    """Acts with a model on K games, one frame of each game still playing per tick, and keeps what each
    step computed for the backward pass.

    Arrays are indexed [tick, game]: hx[t, k] and cx[t, k] hold the LSTM state game k's step t starts
    from, so hx[t + 1, k] is its h_t. A game whose episode ends stops playing for the rest of the
    rollout (as the course's loop stops at done): its later rows stay zero, which keeps them out of
    every gradient. `played` lists the (tick, game) of each step, in the order acted, as t * K + k:
    the order of the rows of hidden_states. The LSTM runs in NumPy on views of the model's own weights,
    as W @ x with the games as columns: OpenBLAS does these memory-bound products in about half the time
    of PyTorch's CPU build (MKL) on an AMD EPYC processor, and the batch reads the 2.2 MB of weights once
    for all K games."""

    def __init__(self, model, num_steps: int, hx: np.ndarray, cx: np.ndarray):
        self.model = model
        lstm = model.lstm
        self.games = len(hx)
        rows = num_steps + 2  # the steps played, one more for the bootstrap value, the state after it
        shape = (rows, self.games)
        # What the backward pass through the convolutions needs, one row per step in the order played
        # (tick after tick, the games playing): the first convolution's input windows, then each conv
        # layer's output after ELU. Acting writes each tick's rows in place, so the backward pass
        # reads them as they are, without gathering the ticks into new tensors.
        self.saved = None  # allocated at the first tick, when the frames' size is known
        self.rows = [0]  # the first row of each tick, and the end of the last one
        self.features = np.zeros((*shape, lstm.input_size), np.float32)  # x_t, the LSTM's input
        self.gates = np.zeros((*shape, 4 * lstm.hidden_size), np.float32)  # i, f, g, o after squashing
        self.tanh_cx = np.zeros((*shape, lstm.hidden_size), np.float32)  # tanh(c_t)
        self.hx = np.zeros((*shape, lstm.hidden_size), np.float32)
        self.cx = np.zeros((*shape, lstm.hidden_size), np.float32)
        self.hx[0], self.cx[0] = hx, cx
        self.played = []  # per tick: t * K + k of each game acted on
        # NumPy views of the weights (no copies): they stay valid while the model is updated in place.
        self.w_ih, self.w_hh = lstm.weight_ih.detach().numpy(), lstm.weight_hh.detach().numpy()
        self.bias = (lstm.bias_ih + lstm.bias_hh).detach().numpy()[:, np.newaxis]
        self.w_actor, self.b_actor = (p.detach().numpy() for p in model.actor_linear.parameters())
        self.w_critic, self.b_critic = (p.detach().numpy() for p in model.critic_linear.parameters())
        # Per gate (i, f, g, o): the scale and shift that turn tanh into sigmoid for i, f and o (see act).
        self.gate_scale = np.repeat(np.float32([0.5, 0.5, 1.0, 0.5]), lstm.hidden_size)[:, np.newaxis]
        self.gate_shift = np.repeat(np.float32([0.5, 0.5, 0.0, 0.5]), lstm.hidden_size)[:, np.newaxis]

    @property
    def ticks(self) -> int:
        return len(self.played)

    def allocate(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """Room for every step of the rollout: the first convolution's input windows (rows, 9, positions),
        then each conv layer's output (rows, 32, h, w), channels-last as the layers compute them."""
        rows = len(self.hx) * self.games  # num_steps + 2 ticks of K games: the most acting can play
        conv1 = self.model.conv1
        windows = frames.shape[1] * conv1.kernel_size[0] * conv1.kernel_size[1]
        saved, x = [torch.empty(rows, windows, int(np.prod(output_size(frames, conv1))))], frames
        for conv in convs(self.model):
            x = torch.empty(rows, conv.out_channels, *output_size(x, conv), memory_format=torch.channels_last)
            saved.append(x)
        return saved

    @torch.inference_mode()
    def act(self, frames: torch.Tensor, games: list[int]) -> np.ndarray:
        """The forward pass on one frame s_t of each game in `games` (n, 1, 42, 42): returns the
        policy's logits, (n, actions)."""
        t = self.ticks
        playing = slice(None) if len(games) == self.games else np.asarray(games)  # a view when all play
        self.played.append(t * self.games + np.asarray(games))
        if self.saved is None:
            self.saved = self.allocate(frames)
        start, stop = self.rows[-1], self.rows[-1] + len(games)
        self.rows.append(stop)
        windows, *outputs = (saved[start:stop] for saved in self.saved)
        conv1 = self.model.conv1
        x = first_conv(patches(frames, conv1, out=windows), conv1, out=outputs[0])
        F.elu_(x)  # ELU in place
        for conv, output in zip(convs(self.model)[1:], outputs[1:]):
            z = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding)
            x = torch.ops.aten.elu.out(z, 1.0, 1.0, 1.0, out=output)  # ELU into the rows kept
        features = x.reshape(len(games), -1).numpy()  # (channel, row, column) order, as forward's view
        self.features[t, playing] = features
        # LSTM cell: the four gates W_ih x_t + W_hh h_{t-1} + b in the order input, forget, cell, output,
        # one column per game.
        gates = self.w_ih @ features.T
        gates += self.w_hh @ self.hx[t, playing].T
        gates += self.bias
        # Squash them, sigmoid for i, f, o and tanh for g, with one tanh over all four:
        # sigmoid(z) = 0.5 * tanh(0.5 * z) + 0.5 (which no large |z| overflows), tanh(z) = 1 * tanh(1 * z) + 0.
        gates *= self.gate_scale
        np.tanh(gates, out=gates)
        gates *= self.gate_scale
        gates += self.gate_shift
        gates = gates.T  # (n, 4 * hidden)
        i, f, g, o = np.split(gates, 4, axis=1)  # views
        c = f * self.cx[t, playing] + i * g  # c_t = f * c_{t-1} + i * g
        tanh_c = np.tanh(c)
        h = o * tanh_c  # h_t = o * tanh(c_t)
        self.gates[t, playing], self.cx[t + 1, playing], self.tanh_cx[t, playing] = gates, c, tanh_c
        self.hx[t + 1, playing] = h
        return h @ self.w_actor.T + self.b_actor

    def values(self, games: list[int]) -> list[float]:
        """The critic's V(s) of the last frame acted on, for each of `games`."""
        return (self.hx[self.ticks, games] @ self.w_critic[0] + self.b_critic[0]).tolist()

    def lstm_state(self, game: int, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Game's (h, c) after its step t - 1, copies of their own."""
        return self.hx[t, game].copy(), self.cx[t, game].copy()


class HiddenStates(torch.autograd.Function):
    """The hidden states h_t of the steps of a rollout's first `ticks` ticks, in the order played, as a
    function of the trunk's weights (the four convolutions and the LSTM). Forward returns what acting
    computed; backward is backpropagation through the LSTM (through time) and then through the
    convolutions."""

    @staticmethod
    def forward(ctx, rollout: Rollout, ticks: int, *trunk_weights):
        ctx.rollout, ctx.ticks = rollout, ticks
        return torch.from_numpy(rollout.hx[1 : ticks + 1].reshape(-1, rollout.hx.shape[2])[played(rollout, ticks)])

    @staticmethod
    def backward(ctx, grad_hidden):
        rollout, ticks = ctx.rollout, ctx.ticks
        lstm_grads, grad_features = lstm_backward(rollout, ticks, grad_hidden.numpy())
        conv_grads = conv_backward(rollout, ticks, torch.from_numpy(grad_features))
        return None, None, *conv_grads, *lstm_grads


def played(rollout: Rollout, ticks: int) -> np.ndarray:
    """t * K + k of each step of the first `ticks` ticks, in the order played."""
    return np.concatenate(rollout.played[:ticks])


def hidden_states(rollout: Rollout, ticks: int) -> torch.Tensor:
    """h_t of each step of the first `ticks` ticks, (steps, 256), with the trunk's gradients."""
    return HiddenStates.apply(rollout, ticks, *trunk_weights(rollout.model))


def lstm_backward(rollout: Rollout, ticks: int, grad_hidden: np.ndarray):
    """Backpropagation through time of the LSTM cell, from dL/dh_t of each step, all games at once.

    Per step, from h = o * tanh(c) and c = f * c_prev + i * g: dc gathers dh * o * (1 - tanh(c)^2) and
    what flows back from the next step (dc_next * f_next); the gates before squashing get
    dc * g * i(1 - i), dc * c_prev * f(1 - f), dc * i * (1 - g^2) and dh * tanh(c) * o(1 - o);
    dh_prev = W_hh^T dgates. The rows of steps not played are zero, so nothing flows through them. The
    weight gradients are then sums over the steps: one matrix product each. Returns the gradients of
    (W_ih, W_hh, b_ih, b_hh) and dL/dx_t of each step played, the gradient of the conv features."""
    games, hidden = rollout.games, rollout.hx.shape[2]
    steps = played(rollout, ticks)
    grad_h = np.zeros((ticks * games, hidden), np.float32)
    grad_h[steps] = grad_hidden
    grad_h = grad_h.reshape(ticks, games, hidden)
    i, f, g, o = np.split(rollout.gates[:ticks], 4, axis=2)
    c_prev, tanh_c = rollout.cx[:ticks], rollout.tanh_cx[:ticks]
    # How much each gate's input moves the loss per unit of dc (input, forget, cell) or of dh (output).
    per_dc = np.stack([g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g)], axis=2)  # (ticks, K, 3, hidden)
    per_dh = tanh_c * o * (1 - o)
    dc_per_dh = o * (1 - tanh_c * tanh_c)
    grad_gates = np.empty((ticks, games, 4 * hidden), np.float32)
    dh, dc = np.zeros((games, hidden), np.float32), np.zeros((games, hidden), np.float32)
    for t in reversed(range(ticks)):
        dh += grad_h[t]
        dc += dh * dc_per_dh[t]
        grad_gates[t, :, : 3 * hidden] = (per_dc[t] * dc[:, np.newaxis]).reshape(games, 3 * hidden)
        np.multiply(per_dh[t], dh, out=grad_gates[t, :, 3 * hidden :])
        dc *= f[t]  # to c_{t-1}
        dh = grad_gates[t] @ rollout.w_hh  # to h_{t-1}
    grad_gates = grad_gates.reshape(ticks * games, 4 * hidden)
    grad_w_ih = grad_gates.T @ rollout.features[:ticks].reshape(ticks * games, -1)
    grad_w_hh = grad_gates.T @ rollout.hx[:ticks].reshape(ticks * games, hidden)
    grad_bias = grad_gates.sum(axis=0)
    grads = (grad_w_ih, grad_w_hh, grad_bias, grad_bias.copy())  # b_ih and b_hh enter the gates alike
    return [torch.from_numpy(grad) for grad in grads], grad_gates[steps] @ rollout.w_ih


def conv_backward(rollout: Rollout, ticks: int, grad_features: torch.Tensor) -> list[torch.Tensor]:
    """Backpropagation through the four conv + ELU layers for all steps at once, from dL/dx_t.
    Returns the gradients of (conv1.weight, conv1.bias, ..., conv4.bias)."""
    stop = rollout.rows[ticks]  # the steps of the first `ticks` ticks, as acting kept them
    inputs = [saved[:stop] for saved in rollout.saved]  # the first conv's windows, then each layer's output
    # The gradients take the activations' memory layout (channels-last in the workers): with mixed
    # layouts every operator below would first reorder its inputs, at several times the cost.
    grad = torch.empty_like(inputs[-1]).copy_(grad_features.view(inputs[-1].shape))
    grads = []
    for k in reversed(range(4)):
        conv, x, y = convs(rollout.model)[k], inputs[k], inputs[k + 1]
        # ELU'(z) = 1 for z > 0, else e^z = ELU(z) + 1: computed from the output y = ELU(z), in place (grad is
        # this pass's own): the same products, without a second tensor of the layer's size.
        torch.ops.aten.elu_backward.grad_input(grad, 1.0, 1.0, 1.0, True, y, grad_input=grad)
        if k == 0:  # the first convolution as first_conv computes it: a matrix product over the windows
            grads[:0] = first_conv_backward(conv, x, grad)
            break
        grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad,
            x,
            conv.weight,
            [conv.out_channels],
            conv.stride,
            conv.padding,
            conv.dilation,
            False,
            [0, 0],
            1,
            [True, True, True],
        )
        grads[:0] = [grad_w, grad_b]
        grad = grad_x
    return grads


def first_conv_backward(conv, windows: torch.Tensor, grad: torch.Tensor) -> list[torch.Tensor]:
    """The gradients of first_conv's weight and bias from its input windows (n, 9, positions) and dL/dz
    (n, 32, h, w), channels-last: per frame the windows (9 x positions) times dL/dz (positions x 32),
    summed over the frames."""
    n, out = len(grad), conv.out_channels
    grad_z = grad.permute(0, 2, 3, 1).reshape(n, -1, out)  # (n, positions, 32): a view of channels-last
    grad_weight = torch.bmm(windows, grad_z).sum(0)  # (9, 32)
    grad_w = torch.empty_like(conv.weight).copy_(grad_weight.t().reshape(conv.weight.shape))
    return [grad_w, grad_z.sum((0, 1))]

"""The fast rollout (play_rollout + evaluate_trajectory) must give the A3C gradient of the course's
classic loop (rollout_classic): same losses and same gradients for every parameter.

One recorded rollout (frames, actions, rewards, a non-zero LSTM state to start from) is replayed to
both paths by a scripted game; both are made to take the recorded actions by replacing their samplers
with the script. A last test checks that, unforced, the two samplers draw the same actions."""

from dataclasses import dataclass

import pytest
import torch

import main
import train
from model import ActorCritic

NUM_ACTIONS = 4
NUM_STEPS = 20
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread, as in the workers: with more, PyTorch's thread pool waits on cores
    that other processes hold, and these small operators get many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class Recording:
    frames: list  # the state before each step, then the state after the last one
    actions: list
    rewards: list
    done: bool  # the last step ended the episode
    hx: torch.Tensor  # LSTM state before the first step
    cx: torch.Tensor


def record(steps: int, done: bool, seed: int) -> Recording:
    g = torch.Generator().manual_seed(seed)
    frames = [torch.randn(1, 42, 42, generator=g) for _ in range(steps + 1)]
    actions = torch.randint(0, NUM_ACTIONS, (steps,), generator=g).tolist()
    rewards = [[0.0, 0.0, 1.0, -1.0][i % 4] for i in range(steps)]  # clipped rewards, some non-zero
    hx, cx = torch.randn(1, 256, generator=g) * 0.5, torch.randn(1, 256, generator=g) * 0.5
    return Recording(frames, actions, rewards, done, hx, cx)


class ReplayGame(train.Game):
    """A Game that replays the recording; start_rollout (the LSTM carry) is the real one."""

    def __init__(self, rec: Recording):
        self.rec = rec
        self.t = 0
        self.state = rec.frames[0]
        self.done = False  # mid-episode: start_rollout must keep the recorded LSTM state
        self.hx, self.cx = rec.hx.clone(), rec.cx.clone()

    def step(self, action: int):
        assert action == self.rec.actions[self.t], "the path did not take the recorded action"
        self.t += 1
        last = self.t == len(self.rec.actions)
        self.done = last and self.rec.done
        # After an episode's end the real game resets; a frame no path may use.
        self.state = torch.full((1, 42, 42), 1e6) if self.done else self.rec.frames[self.t]
        return self.rec.rewards[self.t - 1], self.done


def make_model(memory_format):
    torch.manual_seed(0)
    model = ActorCritic(1, NUM_ACTIONS)
    with torch.no_grad():  # a policy far from uniform, so that the policy terms matter
        model.actor_linear.weight.mul_(100)
    return model.to(memory_format=memory_format)


def loss_and_grads(model, values, log_probs, entropies, rewards, R, args):
    policy_loss, value_loss = train.a3c_loss(values, log_probs, entropies, rewards, R, args)
    model.zero_grad()
    (policy_loss + args.value_loss_coef * value_loss).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return policy_loss.item(), value_loss.item(), R, grads


def force_actions(monkeypatch, actions):
    """The samplers of both paths (Tensor.multinomial in the classic loop, train.sample_action in
    play_rollout) return the recorded actions in order."""
    forced = iter(actions)

    def check(probs):
        assert probs.shape == (1, NUM_ACTIONS) and abs(probs.sum().item() - 1) < 1e-5

    def multinomial(probs, num_samples):
        check(probs)
        return torch.tensor([[next(forced)]])

    def sample_action(logits, noise):
        check(torch.softmax(torch.from_numpy(logits), dim=-1).unsqueeze(0))
        return next(forced)

    monkeypatch.setattr(torch.Tensor, "multinomial", multinomial, raising=False)
    monkeypatch.setattr(train, "sample_action", sample_action)


def run_classic(model, rec, args, monkeypatch):
    force_actions(monkeypatch, rec.actions)
    game = ReplayGame(rec)
    out = train.rollout_classic(model, game, NUM_STEPS)
    monkeypatch.undo()
    assert game.t == len(rec.actions)
    return loss_and_grads(model, *out, args), game


def play_fast(model, rec, monkeypatch):
    """The fast path's rollout of the recording: (trajectory, game)."""
    force_actions(monkeypatch, rec.actions)
    game = ReplayGame(rec)
    traj = train.play_rollout(model, game, NUM_STEPS)
    monkeypatch.undo()
    return traj, game


def run_fast(model, rec, args, monkeypatch):
    traj, game = play_fast(model, rec, monkeypatch)
    # play_rollout kept what was played: the frames (and the bootstrap one unless done), actions,
    # rewards, the end, and the LSTM state the rollout started from.
    assert traj.actions == rec.actions and traj.rewards == rec.rewards and traj.done == rec.done
    expected_frames = rec.frames if not rec.done else rec.frames[:-1]
    assert len(traj.rollout.frames) == len(expected_frames)
    assert all(torch.equal(a[0], b) for a, b in zip(traj.rollout.frames, expected_frames))
    torch.testing.assert_close(torch.from_numpy(traj.rollout.hx[0]), rec.hx[0], rtol=0, atol=0)
    torch.testing.assert_close(torch.from_numpy(traj.rollout.cx[0]), rec.cx[0], rtol=0, atol=0)
    return loss_and_grads(model, *train.evaluate_trajectory(model, traj), args), game


def assert_same(fast, classic):
    policy_f, value_f, R_f, grads_f = fast
    policy_c, value_c, R_c, grads_c = classic
    torch.testing.assert_close(torch.tensor(R_f), torch.tensor(R_c), **TOLERANCE, msg="bootstrap value R")
    torch.testing.assert_close(torch.tensor(policy_f), torch.tensor(policy_c), **TOLERANCE, msg="policy loss")
    torch.testing.assert_close(torch.tensor(value_f), torch.tensor(value_c), **TOLERANCE, msg="value loss")
    assert grads_f.keys() == grads_c.keys()
    for name in grads_c:
        torch.testing.assert_close(grads_f[name], grads_c[name], **TOLERANCE, msg=f"gradient of {name}")


CASES = {
    "bootstraps": dict(steps=NUM_STEPS, done=False, seed=1),  # full rollout, R = V(s_T)
    "ends_with_done": dict(steps=7, done=True, seed=2),  # the episode ends at step 7, R = 0
}
FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


@pytest.mark.parametrize("memory_format", FORMATS.values(), ids=FORMATS.keys())
@pytest.mark.parametrize("gae_lambda", ["1.0", "0.95"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_fast_path_gives_the_classic_gradient(case, gae_lambda, memory_format, monkeypatch):
    args = main.parse_args(["--gae-lambda", gae_lambda])
    rec = record(**case)
    model = make_model(memory_format)
    classic, classic_game = run_classic(model, rec, args, monkeypatch)
    fast, fast_game = run_fast(model, rec, args, monkeypatch)
    assert_same(fast, classic)
    # Both leave the same LSTM state to the next rollout.
    torch.testing.assert_close(fast_game.hx, classic_game.hx, **TOLERANCE)
    torch.testing.assert_close(fast_game.cx, classic_game.cx, **TOLERANCE)
    assert not fast_game.hx.is_inference()  # usable in the next rollout's graph


def test_the_comparison_would_catch_a_wrong_bootstrap_or_lstm_state(monkeypatch):
    """The recording is such that a fast path with a bug of either kind would fail the test above."""
    args = main.parse_args([])
    rec = record(**CASES["bootstraps"])
    model = make_model(torch.contiguous_format)
    classic, _ = run_classic(model, rec, args, monkeypatch)
    policy_c, value_c, R_c, _ = classic
    assert abs(R_c) > 1e-2  # a bootstrap value that is really used

    # Bug 1: no bootstrap (R = 0 although the episode goes on).
    traj, _ = play_fast(model, rec, monkeypatch)
    values, log_probs, entropies, rewards, _ = train.evaluate_trajectory(model, traj)
    _, value_wrong, _, _ = loss_and_grads(model, values, log_probs, entropies, rewards, 0.0, args)
    assert abs(value_wrong - value_c) > 1e-3
    # Bug 2: the rollout started from a zero LSTM state instead of the carried one.
    zero_state = Recording(rec.frames, rec.actions, rec.rewards, rec.done, torch.zeros(1, 256), torch.zeros(1, 256))
    policy_wrong, value_wrong, _, _ = run_fast(model, zero_state, args, monkeypatch)[0]
    assert abs(policy_wrong - policy_c) > 1e-3 and abs(value_wrong - value_c) > 1e-3


class EchoGame(train.Game):
    """A game whose next frame depends on the action taken: any difference in sampling shows."""

    def __init__(self):
        self.frames = [torch.randn(1, 42, 42, generator=torch.Generator().manual_seed(t)) for t in range(8)]
        self.t = 0
        self.state = self.frames[0]
        self.done = True
        self.hx = self.cx = None
        self.actions = []

    def step(self, action: int):
        self.actions.append(action)
        self.t += 1
        self.state = self.frames[self.t % 8] + 0.5 * action
        return float(action == 2), False


def test_a_seed_plays_the_same_actions_in_both_paths():
    """sample_action draws as Tensor.multinomial does, from the same random stream: the same seed
    gives the same actions in both paths, rollout after rollout (the LSTM state carried between)."""
    args = main.parse_args([])
    model = make_model(torch.contiguous_format)
    with torch.no_grad():
        model.actor_linear.weight.div_(100)  # a policy with some randomness left
    played, losses = {}, {}
    for path in ("classic", "fast"):
        torch.manual_seed(123)
        game, losses[path] = EchoGame(), []
        for _ in range(3):
            if path == "classic":
                out = train.rollout_classic(model, game, NUM_STEPS)
            else:
                out = train.evaluate_trajectory(model, train.play_rollout(model, game, NUM_STEPS))
            losses[path].append([loss.item() for loss in train.a3c_loss(*out, args)])
        played[path] = game.actions
    assert len(set(played["classic"])) > 1  # really sampled
    assert played["fast"] == played["classic"]
    torch.testing.assert_close(torch.tensor(losses["fast"]), torch.tensor(losses["classic"]), **TOLERANCE)


def test_sample_action_draws_what_multinomial_draws():
    logits = torch.randn(2000, 1, NUM_ACTIONS, generator=torch.Generator().manual_seed(5)) * 4
    torch.manual_seed(7)
    expected = [torch.softmax(logit, dim=-1).multinomial(num_samples=1).item() for logit in logits]
    torch.manual_seed(7)
    noise = torch.empty(NUM_ACTIONS)
    assert [train.sample_action(logit[0].numpy(), noise) for logit in logits] == expected

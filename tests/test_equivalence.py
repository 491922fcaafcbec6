"""The fast path (--rollout fast, the default) must make the course's update (--rollout classic, the
loop written out in train.py): run on the same scripted game with the same actions, both hand the same
gradients to the shared model, update after update (the LSTM state carried between rollouts, episodes
ending inside a rollout, rewards outside [-1, 1] clipped). Unforced, a seed plays the same actions."""

import pytest
import torch

import main
from a3c_extras.fast_rollout import sample_action
from scripted import NUM_ACTIONS, ScriptedGame, force_actions, run_train, shared_model

TOLERANCE = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread, as in the workers (train sets it; restored for the other tests)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def assert_same_gradients(fast, classic):
    assert len(fast) == len(classic) > 0
    for update, (grads_f, grads_c) in enumerate(zip(fast, classic)):
        assert grads_f.keys() == grads_c.keys()
        for name in grads_c:
            torch.testing.assert_close(grads_f[name], grads_c[name], **TOLERANCE,
                                       msg=f"update {update + 1}: gradient of {name}")


CASES = {
    "bootstraps": dict(length=None),  # rollouts of 20 steps inside one episode: R = V(s_T), LSTM carried
    "ends_with_done": dict(length=7),  # episodes end inside the rollouts: R = 0, the LSTM state reset
}


@pytest.mark.parametrize("gae_lambda", ["1.0", "0.95"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_fast_path_hands_over_the_course_gradient(case, gae_lambda, monkeypatch):
    args = main.parse_args(["--gae-lambda", gae_lambda])
    actions = torch.randint(0, NUM_ACTIONS, (100,), generator=torch.Generator().manual_seed(3)).tolist()
    grads = {}
    for rollout in ("classic", "fast"):
        force_actions(monkeypatch, actions)
        game = ScriptedGame(**case)
        grads[rollout] = run_train(args, rollout, game, updates=3)
        monkeypatch.undo()
        assert game.actions == actions[: len(game.actions)]
    assert_same_gradients(grads["fast"], grads["classic"])


def test_the_scripted_game_exercises_the_bootstrap_and_the_lstm_carry():
    """In the 'bootstraps' case the critic's value of the bootstrap state is far from 0 and the LSTM
    state carried into the second rollout far from zeros, so a bug in either would change the
    gradients compared above."""
    model = shared_model()
    game = ScriptedGame()
    state, _ = game.reset()
    hx, cx = torch.zeros(1, 256), torch.zeros(1, 256)
    with torch.no_grad():
        for _ in range(20):
            value, _, (hx, cx) = model((torch.from_numpy(state).unsqueeze(0), (hx, cx)))
            state = game.step(0)[0]
        value, _, _ = model((torch.from_numpy(state).unsqueeze(0), (hx, cx)))
    assert abs(value.item()) > 1e-2
    assert hx.abs().max() > 1e-2 and cx.abs().max() > 1e-2


def test_a_seed_plays_the_same_actions_in_both_paths():
    """sample_action draws as Tensor.multinomial does, from the same random stream: the same seed gives
    the same actions in both loops on a game whose frames follow the actions, update after update."""
    args = main.parse_args([])
    played, grads = {}, {}
    for rollout in ("classic", "fast"):
        game = ScriptedGame(echo=True)
        grads[rollout] = run_train(args, rollout, game, updates=3, model=shared_model(sharpen=1.0))
        played[rollout] = game.actions
    assert len(set(played["classic"])) > 1  # really sampled
    assert played["fast"] == played["classic"]
    assert_same_gradients(grads["fast"], grads["classic"])


def test_sample_action_draws_what_multinomial_draws():
    logits = torch.randn(2000, 1, NUM_ACTIONS, generator=torch.Generator().manual_seed(5)) * 4
    torch.manual_seed(7)
    expected = [torch.softmax(logit, dim=-1).multinomial(num_samples=1).item() for logit in logits]
    torch.manual_seed(7)
    noise = torch.empty(NUM_ACTIONS)
    assert [sample_action(logit[0].numpy(), noise) for logit in logits] == expected

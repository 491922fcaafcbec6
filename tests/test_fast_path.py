"""The fast path (--rollout fast, the default) must make the course's update (--rollout classic, the
loop written out in train.py): run on the same scripted game with the same actions, both hand the same
gradients to the shared model, update after update (the LSTM state carried between rollouts, episodes
ending inside a rollout, rewards outside [-1, 1] clipped). Unforced, a seed plays the same actions."""

import pytest
import torch

from a3c_extras.fast_rollout import sample_actions
from helpers import params_from
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
            torch.testing.assert_close(
                grads_f[name], grads_c[name], **TOLERANCE, msg=f"update {update + 1}: gradient of {name}"
            )


CASES = {
    "bootstraps": dict(length=None),  # rollouts of 20 steps inside one episode: R = V(s_T), LSTM carried
    "ends_with_done": dict(length=7),  # episodes end inside the rollouts: R = 0, the LSTM state reset
}


@pytest.mark.parametrize("gae_lambda", ["1.0", "0.95"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_fast_path_hands_over_the_course_gradient(case, gae_lambda, monkeypatch):
    args = params_from(["--gae-lambda", gae_lambda])
    actions = torch.randint(0, NUM_ACTIONS, (100,), generator=torch.Generator().manual_seed(3)).tolist()
    grads = {}
    for rollout in ("classic", "fast"):
        force_actions(monkeypatch, actions)
        game = ScriptedGame(**case)
        grads[rollout] = run_train(args, rollout, game, updates=3)
        monkeypatch.undo()
        assert game.actions == actions[: len(game.actions)]
    assert_same_gradients(grads["fast"], grads["classic"])


LARGER = ["--frame-size", "80", "--lstm-size", "512"]  # the opt-in sizes: 800 features into an LSTM of 512


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_fast_path_hands_over_the_course_gradient_with_80x80_frames_and_an_lstm_of_512(case, monkeypatch):
    """--frame-size 80 --lstm-size 512: the fast path's rows, windows and LSTM follow the network's sizes."""
    args = params_from(LARGER)
    actions = torch.randint(0, NUM_ACTIONS, (100,), generator=torch.Generator().manual_seed(4)).tolist()
    grads = {}
    for rollout in ("classic", "fast"):
        force_actions(monkeypatch, actions)
        game = ScriptedGame(**case, frame_size=80)
        model = shared_model(frame_size=80, lstm_size=512)
        grads[rollout] = run_train(args, rollout, game, updates=3, model=model)
        monkeypatch.undo()
        assert game.actions == actions[: len(game.actions)]
    assert grads["fast"][0]["lstm.weight_ih"].shape == (4 * 512, 800)
    assert_same_gradients(grads["fast"], grads["classic"])


@pytest.mark.parametrize("larger", [False, True], ids=["course", "80x80-lstm512"])
def test_a_batch_of_games_hands_over_the_mean_of_their_course_gradients(larger, monkeypatch):
    """--envs-per-worker 3: the games play in one batch (sampled, not forced), end their episodes at
    different steps inside the rollouts, and carry their LSTM states; each update's gradient must be
    the mean of the gradients the course's loop computes on each game alone with the same actions."""
    flags = ["--envs-per-worker", "3", "--max-grad-norm", "1e9"]  # clipping would hide a 3x
    args = params_from(flags + (LARGER if larger else []))
    network = dict(frame_size=args.frame_size, lstm_size=args.lstm_size)
    cases = [dict(length=None, seed=1), dict(length=7, seed=2), dict(length=13, seed=3)]
    cases = [dict(case, frame_size=args.frame_size) for case in cases]
    batch = [ScriptedGame(**case) for case in cases]
    batched = run_train(args, "fast", batch, updates=3, model=shared_model(**network))
    assert len({len(game.actions) for game in batch}) == 3  # the episodes ended inside rollouts, apart
    per_game = []
    args.envs_per_worker = 1
    for case, played in zip(cases, batch):
        assert len(set(played.actions)) > 1  # really sampled
        force_actions(monkeypatch, played.actions)
        game = ScriptedGame(**case)
        per_game.append(run_train(args, "classic", game, updates=3, model=shared_model(**network)))
        monkeypatch.undo()
        assert game.actions == played.actions
    mean = [{name: sum(grads[u][name] for grads in per_game) / len(cases) for name in per_game[0][u]} for u in range(3)]
    assert_same_gradients(batched, mean)


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
    """sample_actions draws as Tensor.multinomial does, from the same random stream: the same seed gives
    the same actions in both loops on a game whose frames follow the actions, update after update."""
    args = params_from([])
    played, grads = {}, {}
    for rollout in ("classic", "fast"):
        game = ScriptedGame(echo=True)
        grads[rollout] = run_train(args, rollout, game, updates=3, model=shared_model(sharpen=1.0))
        played[rollout] = game.actions
    assert len(set(played["classic"])) > 1  # really sampled
    assert played["fast"] == played["classic"]
    assert_same_gradients(grads["fast"], grads["classic"])


@pytest.mark.parametrize("games", [1, 3])
def test_sample_actions_draws_what_multinomial_draws(games):
    """Row by row, as the course's loop would call multinomial for each game in turn."""
    logits = torch.randn(2000, games, NUM_ACTIONS, generator=torch.Generator().manual_seed(5)) * 4
    torch.manual_seed(7)
    expected = [[torch.softmax(row, dim=-1).multinomial(num_samples=1).item() for row in tick] for tick in logits]
    torch.manual_seed(7)
    noise = torch.empty(games, NUM_ACTIONS)
    assert [sample_actions(tick.numpy(), noise) for tick in logits] == expected

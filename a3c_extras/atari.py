"""Atari on today's stack: the environment ids the course and the reference used, and the opt-in
departures from the course (--life-loss, --fire-reset)."""

import difflib
import re
from types import SimpleNamespace

import ale_py
import gymnasium as gym

gym.register_envs(ale_py)  # ale-py ships the ROMs; this makes the ALE/* and legacy ids known to gymnasium


class UnknownEnvError(ValueError):
    """An environment id that is neither registered nor a known legacy id."""


def resolve_env_id(env_id: str) -> tuple[str, dict]:
    """Map an id to a registered one plus keyword arguments.

    The reference's `<Game>Deterministic-v4` ids are gone from today's ALE; their exact equivalent is
    `ALE/<Game>-v5` (frameskip 4) with sticky actions turned off.
    """
    if env_id in gym.registry:
        return env_id, {}
    legacy = re.fullmatch(r"(\w+)Deterministic-v4", env_id)
    if legacy and f"ALE/{legacy.group(1)}-v5" in gym.registry:
        return f"ALE/{legacy.group(1)}-v5", {"repeat_action_probability": 0.0}
    atari = [k for k, spec in gym.registry.items() if str(spec.entry_point).startswith("ale_py")]
    known = atari + [k[4:-3] + "Deterministic-v4" for k in atari if k.startswith("ALE/") and k.endswith("-v5")]
    close = difflib.get_close_matches(env_id, known, n=3, cutoff=0.5)
    hint = ", ".join(close) if close else "ALE/Breakout-v5, Breakout-v0, BreakoutDeterministic-v4"
    raise UnknownEnvError(f"unknown environment id '{env_id}'; closest valid ids: {hint}")


MAX_FRAMES = 108_000  # an episode ends after 30 minutes of play (27,000 agent steps at frameskip 4): the standard cap


def make(env_id: str, video: bool = False, link=None) -> gym.Env:
    """The course's gym.make(env_id) on today's stack: legacy ids mapped, a screen to record when `video`
    (or link.render), episodes capped at MAX_FRAMES emulator frames, and the opt-in departures of the
    run (link.params.life_loss, link.params.fire_reset): a lost life ends training episodes only, the
    test process (link.name "test") plays whole games. `link` is a run's WorkerLink or anything with
    those attributes; None means the course's game as it is."""
    params = getattr(link, "params", None)
    registered_id, kwargs = resolve_env_id(env_id)
    render_mode = "rgb_array" if video or getattr(link, "render", False) else None
    env = gym.make(registered_id, render_mode=render_mode, max_num_frames_per_episode=MAX_FRAMES, **kwargs)
    if getattr(params, "life_loss", False) and getattr(link, "name", None) != "test":  # training games only
        env = EpisodicLife(env)
    if getattr(params, "fire_reset", False):
        env = FireReset(env)
    return env


def options(render: bool = False, **params) -> SimpleNamespace:
    """A link to no run for create_atari_env's `link`, carrying only environment options: the screen to
    record (render) and departures or the rollout (fire_reset=True, rollout="classic", ...)."""
    return SimpleNamespace(params=SimpleNamespace(**params), render=render, make_env=None)


def fast_frames(link) -> bool:
    """Whether create_atari_env processes frames with a3c_extras/fast_frames.py (the same values, bit for
    bit): on the fast path, the default; --rollout classic runs the course's own wrappers."""
    return getattr(getattr(link, "params", None), "rollout", "fast") == "fast"


class EpisodicLife(gym.Wrapper):
    """Opt-in (--life-loss): a lost life ends the training episode, so the critic learns that losing a
    life is bad; the game itself goes on and only resets when it is really over
    (`info["game_over"]` tells which)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        life_lost = 0 < lives < self.lives
        self.lives = lives
        info["game_over"] = self.game_over
        return obs, reward, terminated or life_lost, truncated, info

    def reset(self, **kwargs):
        if self.game_over:
            obs, info = self.env.reset(**kwargs)
        else:  # carry on after a lost life with a no-op
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self.game_over = False
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info


class FireReset(gym.Wrapper):
    """Opt-in (--fire-reset): press FIRE after each reset and after each lost life, so the ball is
    always in play (the agent need not learn to serve)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.fire = env.unwrapped.get_action_meanings().index("FIRE")
        self.lives = 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = self.env.unwrapped.ale.lives()
        if lives < self.lives and not (terminated or truncated):
            obs, more, terminated, truncated, info = self.env.step(self.fire)
            reward += more
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(self.fire)
        if terminated or truncated:
            obs, info = self.env.reset(**kwargs)
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info

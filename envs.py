"""Atari environments for A3C: gymnasium + ale-py, frames cropped and shrunk to 42x42, then normalised."""

import difflib
import re

import ale_py
import cv2
import gymnasium as gym
import numpy as np
from gymnasium.spaces import Box

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


def create_atari_env(env_id: str, render_mode: str | None = None, life_loss: bool = False,
                     fire_reset: bool = False) -> gym.Env:
    """The course's environment: Atari game -> 1x42x42 float32 frames, normalised on the fly.

    `life_loss` and `fire_reset` are opt-in departures from the course (see README).
    """
    registered_id, kwargs = resolve_env_id(env_id)
    env = gym.make(registered_id, render_mode=render_mode, **kwargs)
    if life_loss:
        env = EpisodicLife(env)
    if fire_reset:
        env = FireReset(env)
    env = AtariRescale42x42(env)
    env = NormalizedEnv(env)
    return env


# Grey level of a pixel, indexed by R + G + B (0..765): the mean of the three channels over 255, built
# with the course's own operations (float64 mean, cast to float32, times 1/255), so that looking it up
# gives bit for bit the values of frame.mean(2).astype(np.float32) / 255 at a fraction of the cost.
_GREY = (np.arange(3 * 255 + 1) / 3.0).astype(np.float32)
_GREY *= 1.0 / 255.0


def _process_frame42(frame: np.ndarray) -> np.ndarray:
    frame = frame[34 : 34 + 160, :160]  # crop away the score bar and the bottom border
    # Resize in two steps, as the course does: 80x80 first, then 42x42 (uint8, RGB).
    frame = cv2.resize(frame, (80, 80))
    frame = cv2.resize(frame, (42, 42))
    # Grey in [0, 1]: the mean over R, G, B, through the table above (the sum fits in uint16).
    channel_sum = frame[:, :, 0].astype(np.uint16)
    channel_sum += frame[:, :, 1]
    channel_sum += frame[:, :, 2]
    return _GREY.take(channel_sum)[np.newaxis]  # channels first: (1, 42, 42), float32


class AtariRescale42x42(gym.ObservationWrapper):
    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = Box(0.0, 1.0, (1, 42, 42), dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return _process_frame42(observation)


class NormalizedEnv(gym.ObservationWrapper):
    """Subtract a running mean and divide by a running std of the frames' mean and std.

    Exponential averages with alpha 0.9999, bias-corrected by 1 - alpha^t like Adam's moments.
    The statistics persist across episodes.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = Box(-np.inf, np.inf, (1, 42, 42), dtype=np.float32)
        self.state_mean = 0.0
        self.state_std = 0.0
        self.alpha = 0.9999
        self.num_steps = 0

    def observation(self, observation: np.ndarray) -> np.ndarray:
        self.num_steps += 1
        # The frame's mean and standard deviation, computed as observation.mean() and .std() do
        # (float32 sums, divided by the count as a float64), the deviations kept for the std.
        frame_mean = observation.mean()
        deviations = observation - frame_mean
        np.multiply(deviations, deviations, out=deviations)
        frame_std = np.sqrt(observation.dtype.type(np.add.reduce(deviations, axis=None) / np.intp(observation.size)))
        self.state_mean = self.state_mean * self.alpha + frame_mean * (1 - self.alpha)
        self.state_std = self.state_std * self.alpha + frame_std * (1 - self.alpha)
        bias_correction = 1 - pow(self.alpha, self.num_steps)
        unbiased_mean = self.state_mean / bias_correction
        unbiased_std = self.state_std / bias_correction
        normalized = observation - unbiased_mean
        normalized /= unbiased_std + 1e-8
        return normalized


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

# Improvement of the Gym environment with universe
"""The course's envs.py: the Atari game, its frames cropped, shrunk to 42x42 and averaged to grey, then
normalised with running statistics. Lines marked #+ are not the course's (docs/course.md says why)."""

import cv2
import gymnasium as gym  #+ gym is now gymnasium
import numpy as np
from gymnasium.spaces import Box  #+ gym.spaces.box
from a3c_extras import atari, fast_frames, large_frames, monitor, sizes  #+ what the course did not have (a3c_extras/)

# Taken from https://github.com/openai/universe-starter-agent


def create_atari_env(env_id, video=False, link=None):  #+ link: the run's side (a3c_extras/links.py)
    if getattr(link, "make_env", None) is not None:  #+ the tests' small game in place of Atari
        return link.make_env(link.params)  #+
    env = atari.make(env_id, video, link)  #+ gym.make(env_id), with today's ids and the run's --life-loss, --fire-reset
    if video:
        env = monitor.Monitor(env, link)  #+ wrappers.Monitor(env, 'test', force=True): an H.264 recorder
    if atari.fast_frames(link):  #+ the default: the same frames, bit for bit, computed faster
        return fast_frames.Normalized(fast_frames.Rescale(env, sizes.frame_size(link)))  #+ (a3c_extras/fast_frames.py)
    if sizes.frame_size(link) == 80:  #+ --frame-size 80: the frames below without their last shrink to 42x42
        return MyNormalizedEnv(large_frames.Rescale80x80(env))  #+ (a3c_extras/large_frames.py)
    env = MyAtariRescale42x42(env)
    env = MyNormalizedEnv(env)
    return env


def _process_frame42(frame):
    frame = frame[34:34 + 160, :160]
    # Resize by half, then down to 42x42 (essentially mipmapping). If
    # we resize directly we lose pixels that, when mapped to 42x42,
    # aren't close enough to the pixel boundary.
    frame = cv2.resize(frame, (80, 80))
    frame = cv2.resize(frame, (42, 42))
    frame = frame.mean(2)
    frame = frame.astype(np.float32)
    frame *= (1.0 / 255.0)
    #frame = np.reshape(frame, [1, 42, 42])
    return frame


class MyAtariRescale42x42(gym.ObservationWrapper):

    def __init__(self, env=None):
        super(MyAtariRescale42x42, self).__init__(env)
        self.observation_space = Box(0.0, 1.0, [1, 42, 42], dtype=np.float32)  #+ dtype: gymnasium asks for it

    def observation(self, observation):  #+ gym's _observation is gymnasium's observation
        return _process_frame42(observation)


class MyNormalizedEnv(gym.ObservationWrapper):

    def __init__(self, env=None):
        super(MyNormalizedEnv, self).__init__(env)
        self.state_mean = 0
        self.state_std = 0
        self.alpha = 0.9999
        self.num_steps = 0

    def observation(self, observation):  #+ gym's _observation is gymnasium's observation
        self.num_steps += 1
        self.state_mean = self.state_mean * self.alpha + \
            observation.mean() * (1 - self.alpha)
        self.state_std = self.state_std * self.alpha + \
            observation.std() * (1 - self.alpha)

        unbiased_mean = self.state_mean / (1 - pow(self.alpha, self.num_steps))
        unbiased_std = self.state_std / (1 - pow(self.alpha, self.num_steps))

        ret = (observation - unbiased_mean) / (unbiased_std + 1e-8)
        return np.expand_dims(ret, axis=0)

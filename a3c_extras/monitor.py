"""The test process's videos: what gym's wrappers.Monitor did for the course, for
create_atari_env(env_id, video=True), as H.264 MP4s (a3c_extras/videos.py).

Without a run (the course's own main.py body): into ./test, as the Monitor did, episodes 0, 1, 8, 27,
64, ..., 729, then every 1000th, named episode-NNNNNN-reward<score>.mp4.
In a run (python main.py): into <run-dir>/videos, the first evaluation and then every --record-every-th
(0: none), named eval-NNNN-steps<total steps>-reward<score>.mp4; with --overlay, the agent's input,
policy and value beside the game (test.py hands them over with note()).

One video frame per agent step: the screen the agent decided on. An episode the test process ends itself
(the stuck-agent guard, its length cap) keeps its video with "-cut-short" before ".mp4", so that it is
not taken for a finished game; one cut short by the end of the run leaves no video (close()). A failed
recording is reported in one line and never stops the run."""

import sys
from pathlib import Path

import gymnasium as gym

from a3c_extras.videos import VideoError, add_step, recorder_for


def monitor_schedule(episode: int) -> bool:
    """gym's Monitor's default: the perfect cubes up to 1000, then every 1000th episode."""
    if episode < 1000:
        return round(episode ** (1 / 3)) ** 3 == episode
    return episode % 1000 == 0


class Monitor(gym.Wrapper):
    def __init__(self, env: gym.Env, link=None):
        super().__init__(env)
        params = getattr(link, "params", None)
        self.in_run = bool(getattr(params, "run_dir", None))
        if self.in_run:
            every = params.record_every
            self.folder = Path(params.run_dir) / "videos" if every else None
            self.wanted = lambda episode: episode % every == 0
            self.overlay = params.overlay
        else:
            self.folder, self.wanted, self.overlay = Path("test"), monitor_schedule, False
        self.link = link
        self.episodes = 0  # episodes finished
        self.playing = False  # between a reset and the episode's end
        self.length = 0  # steps of the episode
        self.recorder = None
        self.reward = 0.0
        self.steps = 0  # the run's agent steps when the episode started
        self.decision = None  # (observation, probabilities, value) of the next step, for the overlay

    def reset(self, **kwargs):
        if self.playing and self.length == 0:  # reset twice in a row (seeding, then the first episode)
            return self.env.reset(**kwargs)
        self._finish(cut_short=True)  # an episode the test process ended itself (a stuck agent, its length cap)
        observation, info = self.env.reset(**kwargs)
        self.reward, self.length, self.playing = 0.0, 0, True
        if self.folder is not None and self.wanted(self.episodes):
            self.steps = self.link.total_steps() if hasattr(self.link, "total_steps") else 0
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                self.recorder = recorder_for(self.folder / f"recording-{self.episodes:06d}.mp4", self, self.overlay)
            except (OSError, VideoError) as error:
                self._failed(error)
        return observation, info

    def note(self, observation, prob, value) -> None:
        """What the agent saw and decided at the coming step, for the overlay."""
        self.decision = (observation, prob, value)

    def step(self, action):
        if self.recorder is not None:
            try:
                if self.overlay:
                    add_step(self.recorder, self, *self.decision)
                else:
                    self.recorder.add_frame(self.render())
            except (OSError, VideoError, ValueError, TypeError) as error:
                self._failed(error)
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.reward += reward
        self.length += 1
        if terminated or truncated:
            self._finish()
        return observation, reward, terminated, truncated, info

    def close(self):
        """The run stops: an unfinished episode leaves no video."""
        self._finish(keep=False)
        super().close()

    def _name(self, cut_short: bool) -> str:
        ending = "-cut-short.mp4" if cut_short else ".mp4"
        if self.in_run:
            return f"eval-{self.episodes:04d}-steps{self.steps}-reward{self.reward:g}{ending}"
        return f"episode-{self.episodes:06d}-reward{self.reward:g}{ending}"

    def _finish(self, keep: bool = True, cut_short: bool = False) -> None:
        if not self.playing:
            return
        self.playing = False
        recorder, self.recorder = self.recorder, None
        if recorder is not None:
            try:
                written = recorder.close(recorder.path.with_name(self._name(cut_short)) if keep else None)
                if not keep and written is not None:
                    written.unlink()
            except (OSError, VideoError) as error:
                self._failed(error)
        if keep:
            self.episodes += 1

    def _failed(self, error: Exception) -> None:
        self.recorder = None
        print(f"test: video not saved: {error}", file=sys.stderr, flush=True)


def note(env: gym.Env, observation, prob, value) -> None:
    """Hand the agent's decision to the Monitor inside `env`, if there is one (the video's overlay)."""
    while env is not None:
        if isinstance(env, Monitor):
            return env.note(observation, prob, value)
        env = getattr(env, "env", None)

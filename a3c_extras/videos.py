"""Videos of the agent playing: one MP4 per episode, optionally with what the agent sees beside the game.

The file is H.264 (libx264, yuv420p) in an MP4 whose index (moov atom) comes first ("faststart"), so
web browsers and common players can play it, even while it downloads. The overlay's drawing is in overlay.py.
"""

import os
import queue
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from a3c_extras.overlay import compose_frame, even_size


class VideoError(RuntimeError):
    """A video that could not be written; the message says which and why."""


_END = object()  # tells the encoder thread that the episode is over


class Encoder:
    """An H.264 MP4 written by a thread of its own from a bounded queue of steps, each made an image by
    `compose(step)`: the caller waits only when the encoder falls `queue_size` steps behind, and memory stays the
    same however long the episode is (frames are streamed to the file, never all kept). Any error is kept for the
    caller, who learns of it at the next put() or at finish(); `name`, the video's, is in each message."""

    def __init__(self, path: Path, name: Path, fps: float, compose, queue_size: int, crf: int):
        self.name, self.compose = name, compose
        self.error: BaseException | None = None
        self.finished = False  # set by the thread once the file is complete
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        # Opened here, not in the thread, so a bad path fails at once in the caller.
        self.container = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
        self.stream = self.container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        self.stream.pix_fmt = "yuv420p"
        # Atari frames are small: one encoder thread keeps up easily and leaves the cores to the agent.
        self.stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}
        self.thread = threading.Thread(target=self.encode_all, name=f"video {name.name}", daemon=True)
        self.thread.start()

    def put(self, item) -> None:
        """Queue an item, waiting while the queue is full, but never for an encoder that has died."""
        while True:
            if self.error is not None or not self.thread.is_alive():
                raise VideoError(f"recording {self.name} failed: {describe(self.error)}")
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def finish(self, timeout: float) -> None:
        """The end marker, then wait for the file to be complete; VideoError if it could not be."""
        try:
            self.put(_END)
        except VideoError:
            pass  # the thread has ended with an error: reported below
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise VideoError(f"the encoder of {self.name} did not finish within {timeout:g} s")
        if self.error is not None or not self.finished:
            raise VideoError(f"recording {self.name} failed: {describe(self.error)}") from self.error

    def encode_all(self) -> None:
        """The thread: compose and encode the steps until the end marker, then finish the file."""
        try:
            index = 0
            while (step := self.queue.get()) is not _END:
                image = self.compose(step)
                if index == 0:  # the video's size is known from its first frame
                    self.stream.height, self.stream.width = image.shape[:2]
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                frame.pts = index  # in units of 1/fps: one frame per agent step
                for packet in self.stream.encode(frame):
                    self.container.mux(packet)
                index += 1
            for packet in self.stream.encode():  # flush the frames the encoder still holds
                self.container.mux(packet)
            self.finished = True
        except Exception as error:  # noqa: BLE001 - whatever it is, the caller must hear of it
            self.error = error
        finally:
            try:
                self.container.close()
            except Exception as error:  # noqa: BLE001 - a file that cannot be finished is a failure too
                self.error = self.error or error


class EpisodeRecorder:
    """Writes one episode as an MP4: one video frame per agent step, shown for 1/fps seconds.

    The caller passes fps = 60 / frameskip so the video runs at the game's speed: each agent step
    covers `frameskip` emulator frames of the 60 Hz console, and only the screen at the agent's
    decision is kept. So the video has exactly as many frames as add_frame was called. The steps are
    composed and encoded by an Encoder's thread.

    While recording, the file is `path` + ".part"; close() renames it to `path` (or `rename_to`), so a
    process killed mid-episode never leaves a broken .mp4 behind.
    """

    def __init__(
        self,
        path,
        fps: float,
        overlay: bool = False,
        action_names: list[str] | None = None,
        queue_size: int = 32,
        crf: int = 18,
    ):
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".part")
        self.overlay = overlay
        self.action_names = list(action_names) if action_names is not None else None
        self.frames = 0  # add_frame calls so far
        self._size = None  # the screen's shape: every frame of a video must have the same
        self._closed = False
        self._encoder = Encoder(self.partial, self.path, fps, self._compose, queue_size, crf)

    def add_frame(
        self,
        screen: np.ndarray,
        observation: np.ndarray | None = None,
        probs: np.ndarray | None = None,
        value: float | None = None,
        action: int | None = None,
    ) -> None:
        """Queue one agent step: the game screen (H, W, 3 uint8 RGB) and, for the overlay, the agent's
        input, action probabilities, value and (optionally) the action taken. Raises VideoError if the
        encoder has failed."""
        if self._closed:
            raise VideoError(f"{self.path.name}: add_frame after close")
        screen = np.array(screen, dtype=np.uint8)  # a copy: the caller may reuse its buffer
        if screen.ndim != 3 or screen.shape[2] != 3:
            raise ValueError(f"expected an RGB screen of shape (H, W, 3), got {screen.shape}")
        if self._size is None:
            self._size = screen.shape
        elif screen.shape != self._size:
            raise ValueError(f"screen shape changed from {self._size} to {screen.shape} within one video")
        if self.overlay:
            if observation is None or probs is None or value is None:
                raise ValueError("the overlay needs the observation, the action probabilities and the value")
            step = (
                screen,
                np.array(observation, dtype=np.float32),
                np.array(probs, dtype=np.float64),
                float(value),
                action,
            )
        else:
            step = (screen,)
        self._encoder.put(step)
        self.frames += 1

    def close(self, rename_to=None, timeout: float = 60.0) -> Path | None:
        """Wait for the encoder to finish the file, then move it to `rename_to` if given (recorder.path
        becomes that). Returns the file, or None if no frame was added (then no file is left).
        Raises VideoError if encoding failed or did not finish within `timeout` seconds."""
        if self._closed:
            raise VideoError(f"{self.path.name}: closed twice")
        self._closed = True
        try:
            self._encoder.finish(timeout)
        except VideoError:
            if not self._encoder.thread.is_alive():
                self.partial.unlink(missing_ok=True)
            raise
        if self.frames == 0:
            self.partial.unlink(missing_ok=True)
            return None
        final = Path(rename_to) if rename_to is not None else self.path
        os.replace(self.partial, final)
        self.path = final
        return final

    def _compose(self, step: tuple) -> np.ndarray:
        if not self.overlay:
            return even_size(step[0])
        screen, observation, probs, value, action = step
        names = self.action_names or [str(i) for i in range(len(probs))]
        return compose_frame(screen, observation, probs, value, names, action)


def describe(error: BaseException | None) -> str:
    if error is None:
        return "the encoder thread stopped"
    return f"{type(error).__name__}: {error}"


# ---------------------------------------------------------------- recording an agent's episodes


def recorder_for(path, env, overlay: bool) -> EpisodeRecorder:
    """An MP4 recorder of the real game screen at the game's speed (one frame per agent step)."""
    frameskip = env.unwrapped._frameskip
    mean_skip = sum(frameskip) / 2 if isinstance(frameskip, tuple) else frameskip
    return EpisodeRecorder(path, fps=60 / mean_skip, overlay=overlay, action_names=env.unwrapped.get_action_meanings())


def add_step(recorder: EpisodeRecorder | None, env, observation, prob, value) -> None:
    """One agent step: the real screen and, for the overlay, what the agent saw and decided."""
    if recorder is not None:
        recorder.add_frame(env.render(), observation, np.asarray(prob).reshape(-1), float(value))

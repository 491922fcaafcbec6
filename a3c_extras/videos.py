"""Videos of the agent playing: one MP4 per episode, optionally with what the agent sees beside the game.

The file is H.264 (libx264, yuv420p) in an MP4 whose index (moov atom) comes first ("faststart"), so
web browsers and common players can play it, even while it downloads. tools/overlay_picture.py redraws
docs/overlay.png.
"""

import os
import queue
import sys
import threading
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

# Layout of the overlay, in pixels. The panels are as tall as the game screen (210 for Atari).
INPUT_SCALE = 4  # the 42x42 input, enlarged with nearest-neighbour to 168x168
MARGIN = 8
BAR_LENGTH = 80  # a probability of 1.0
ROW_HEIGHT = 28  # one action of the policy
CLIP = 3.0  # the input is normalised (about zero mean, unit variance): -3 is black, +3 white

FONT = cv2.FONT_HERSHEY_SIMPLEX
SMALL, LARGE = 0.4, 0.6  # font scales
BACKGROUND = (24, 24, 24)  # colours are RGB, like the game screen
TEXT = (230, 230, 230)
DIM = (150, 150, 150)
BAR = (80, 140, 230)
CHOSEN = (255, 200, 0)
CHOSEN_ROW = (60, 60, 60)


class VideoError(RuntimeError):
    """A video that could not be written; the message says which and why."""


# ---------------------------------------------------------------- one frame of the video

def compose_frame(screen: np.ndarray, observation: np.ndarray, probs: np.ndarray, value: float,
                  action_names: list[str], action: int | None = None) -> np.ndarray:
    """The game screen with, to its right, the agent's input and its policy and value (uint8 RGB).

    `action` is the action taken; by default the greedy one (highest probability) is highlighted.
    The result is as tall as the screen and its width is even, as yuv420p needs.
    """
    height = screen.shape[0]
    if action is None:
        action = int(np.argmax(probs))
    parts = [screen, input_panel(observation, height), policy_panel(probs, value, action_names, action, height)]
    frame = np.concatenate(parts, axis=1)
    return even_size(frame)


def input_panel(observation: np.ndarray, height: int) -> np.ndarray:
    """What the agent sees: its 1x42x42 input in grey, enlarged with nearest-neighbour so the pixels stay
    sharp, centred vertically under a title."""
    grey = observation_to_grey(observation)
    size = grey.shape[0] * INPUT_SCALE
    panel = blank(height, size + 2 * MARGIN)
    top = (height - size) // 2
    big = cv2.resize(grey, (size, size), interpolation=cv2.INTER_NEAREST)
    panel[top : top + size, MARGIN : MARGIN + size] = big[:, :, None]
    put_text(panel, f"agent input {grey.shape[1]}x{grey.shape[0]}", (MARGIN, top - 6), SMALL, DIM)
    return panel


def observation_to_grey(observation: np.ndarray) -> np.ndarray:
    """Normalised values to uint8 grey: [-CLIP, CLIP] spans black to white; beyond is clipped."""
    values = np.clip(np.asarray(observation, dtype=np.float32).reshape(observation.shape[-2:]), -CLIP, CLIP)
    return np.round((values + CLIP) * (255.0 / (2 * CLIP))).astype(np.uint8)


def policy_panel(probs: np.ndarray, value: float, action_names: list[str], action: int,
                 height: int) -> np.ndarray:
    """One bar per action with its name and probability (the chosen action highlighted); below, the
    critic's value of the state."""
    name_width = max(text_width(name, SMALL) for name in action_names)
    bar_x = MARGIN + name_width + 6
    number_x = bar_x + BAR_LENGTH + 6
    panel = blank(height, number_x + text_width("0.00", SMALL) + MARGIN)
    put_text(panel, "policy", (MARGIN, 15), SMALL, DIM)
    row_height = min(ROW_HEIGHT, (height - 80) // len(action_names))
    for i, (name, p) in enumerate(zip(action_names, probs)):
        top = 22 + i * row_height
        chosen = i == action
        if chosen:
            panel[top : top + row_height - 2, 2:-2] = CHOSEN_ROW
        middle = top + row_height // 2
        put_text(panel, name, (MARGIN, middle + 4), SMALL, CHOSEN if chosen else TEXT)
        length = round(float(np.clip(p, 0.0, 1.0)) * BAR_LENGTH)
        cv2.rectangle(panel, (bar_x, middle - 6), (bar_x + BAR_LENGTH, middle + 6), DIM, 1)
        if length:
            cv2.rectangle(panel, (bar_x, middle - 6), (bar_x + length, middle + 6), CHOSEN if chosen else BAR, -1)
        put_text(panel, f"{float(p):.2f}", (number_x, middle + 4), SMALL, CHOSEN if chosen else TEXT)
    put_text(panel, "value (critic)", (MARGIN, height - 38), SMALL, DIM)
    put_text(panel, f"{float(value):+.3f}", (MARGIN, height - 14), LARGE, TEXT)
    return panel


def blank(height: int, width: int) -> np.ndarray:
    panel = np.empty((height, width, 3), dtype=np.uint8)
    panel[:] = BACKGROUND
    return panel


def put_text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float, colour) -> None:
    cv2.putText(image, text, origin, FONT, scale, colour, 1, cv2.LINE_AA)


def text_width(text: str, scale: float) -> int:
    return cv2.getTextSize(text, FONT, scale, 1)[0][0]


def even_size(frame: np.ndarray) -> np.ndarray:
    """yuv420p halves the colour resolution, so H.264 needs even sides: pad one row or column if odd."""
    pad_rows, pad_cols = frame.shape[0] % 2, frame.shape[1] % 2
    if pad_rows or pad_cols:
        frame = np.pad(frame, ((0, pad_rows), (0, pad_cols), (0, 0)), mode="edge")
    return frame


# ---------------------------------------------------------------- the recorder

_END = object()  # tells the encoder thread that the episode is over


class EpisodeRecorder:
    """Writes one episode as an MP4: one video frame per agent step, shown for 1/fps seconds.

    The caller passes fps = 60 / frameskip so the video runs at the game's speed: each agent step
    covers `frameskip` emulator frames of the 60 Hz console, and only the screen at the agent's
    decision is kept. So the video has exactly as many frames as add_frame was called.

    Frames are copied into a bounded queue and composed and encoded by a background thread: the
    evaluation loop only waits when the encoder falls `queue_size` frames behind, and memory stays
    the same however long the episode is (frames are streamed to the file, never all kept).

    While recording, the file is `path` + ".part"; close() renames it to `path` (or `rename_to`), so a
    process killed mid-episode never leaves a broken .mp4 behind.
    """

    def __init__(self, path, fps: float, overlay: bool = False, action_names: list[str] | None = None,
                 queue_size: int = 32, crf: int = 18):
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".part")
        self.overlay = overlay
        self.action_names = list(action_names) if action_names is not None else None
        self.frames = 0  # add_frame calls so far
        self._size = None  # the screen's shape: every frame of a video must have the same
        self._closed = False
        self._error: BaseException | None = None
        self._finished = False  # set by the encoder thread once the file is complete
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        # Opened here, not in the thread, so a bad path fails at once in the caller.
        self._container = av.open(str(self.partial), "w", format="mp4", options={"movflags": "+faststart"})
        self._stream = self._container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        self._stream.pix_fmt = "yuv420p"
        # Atari frames are small: one encoder thread keeps up easily and leaves the cores to the agent.
        self._stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}
        self._thread = threading.Thread(target=self._encode_all, name=f"video {self.path.name}", daemon=True)
        self._thread.start()

    def add_frame(self, screen: np.ndarray, observation: np.ndarray | None = None,
                  probs: np.ndarray | None = None, value: float | None = None, action: int | None = None) -> None:
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
            step = (screen, np.array(observation, dtype=np.float32), np.array(probs, dtype=np.float64),
                    float(value), action)
        else:
            step = (screen,)
        self._put(step)
        self.frames += 1

    def close(self, rename_to=None, timeout: float = 60.0) -> Path | None:
        """Wait for the encoder to finish the file, then move it to `rename_to` if given (recorder.path
        becomes that). Returns the file, or None if no frame was added (then no file is left).
        Raises VideoError if encoding failed or did not finish within `timeout` seconds."""
        if self._closed:
            raise VideoError(f"{self.path.name}: closed twice")
        self._closed = True
        try:
            self._put(_END)
        except VideoError:
            pass  # the thread has ended with an error: reported below
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise VideoError(f"the encoder of {self.path} did not finish within {timeout:g} s")
        if self._error is not None or not self._finished:
            self.partial.unlink(missing_ok=True)
            raise VideoError(f"recording {self.path} failed: {describe(self._error)}") from self._error
        if self.frames == 0:
            self.partial.unlink(missing_ok=True)
            return None
        final = Path(rename_to) if rename_to is not None else self.path
        os.replace(self.partial, final)
        self.path = final
        return final

    def _put(self, item) -> None:
        """Queue an item, waiting while the queue is full, but never for an encoder that has died."""
        while True:
            if self._error is not None or not self._thread.is_alive():
                raise VideoError(f"recording {self.path} failed: {describe(self._error)}")
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _encode_all(self) -> None:
        """The encoder thread: compose and encode frames until the end marker, then finish the file.
        Any error is kept for the caller; the thread then stops taking frames."""
        try:
            index = 0
            while (step := self._queue.get()) is not _END:
                self._encode(self._compose(step), index)
                index += 1
            for packet in self._stream.encode():  # flush the frames the encoder still holds
                self._container.mux(packet)
            self._finished = True
        except Exception as error:  # noqa: BLE001 - whatever it is, close() must report it
            self._error = error
        finally:
            try:
                self._container.close()
            except Exception as error:  # noqa: BLE001 - a file that cannot be finished is a failure too
                self._error = self._error or error

    def _compose(self, step: tuple) -> np.ndarray:
        if not self.overlay:
            return even_size(step[0])
        screen, observation, probs, value, action = step
        names = self.action_names or [str(i) for i in range(len(probs))]
        return compose_frame(screen, observation, probs, value, names, action)

    def _encode(self, image: np.ndarray, index: int) -> None:
        if index == 0:  # the video's size is known from its first frame
            self._stream.height, self._stream.width = image.shape[:2]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = index  # in units of 1/fps: one frame per agent step
        for packet in self._stream.encode(frame):
            self._container.mux(packet)


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


class EvaluationVideos:
    """The test process's videos during training: its first evaluation episode and then every
    args.record_every-th, in <run-dir>/videos/eval-NNNN-steps<total steps>-reward<score>.mp4. An episode
    cut short by the end of the run leaves no video; a failed recording is reported, never allowed to
    stop the run."""

    def __init__(self, args):
        run_dir = getattr(args, "run_dir", None)
        self.folder = Path(run_dir) / "videos" if run_dir and getattr(args, "record_every", 0) else None
        self.every = getattr(args, "record_every", 0)
        self.overlay = getattr(args, "overlay", False)
        self.render_mode = "rgb_array" if self.folder else None
        self.episodes = 0
        self.recorder = None

    def start_episode(self, env) -> None:
        if self.folder and self.episodes % self.every == 0:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                self.recorder = recorder_for(self.folder / f"eval-{self.episodes:04d}.mp4", env, self.overlay)
            except (OSError, VideoError) as error:  # a full disk, a read-only directory: no video, the run goes on
                print(f"test: video not saved: {describe(error)}", file=sys.stderr, flush=True)

    def add_frame(self, env, observation, prob, value) -> None:
        try:
            add_step(self.recorder, env, observation.numpy() if hasattr(observation, "numpy") else observation,
                     prob.numpy() if hasattr(prob, "numpy") else prob, value)
        except VideoError as error:  # the encoder failed (a full disk): this episode gets no video
            recorder, self.recorder = self.recorder, None
            print(f"test: video not saved: {error}", file=sys.stderr, flush=True)
            try:
                recorder.close()
            except VideoError:
                pass

    def end_episode(self, num_steps: int | None, reward: float | None) -> None:
        """Close the episode's video under its final name; None: the episode did not finish."""
        recorder, self.recorder = self.recorder, None
        if reward is not None:
            self.episodes += 1
        if recorder is None:
            return
        final = None if reward is None else recorder.path.with_name(
            f"eval-{self.episodes - 1:04d}-steps{num_steps}-reward{reward:g}.mp4")
        try:
            written = recorder.close(final)
        except VideoError as error:
            print(f"test: video not saved: {error}", file=sys.stderr, flush=True)
            return
        if final is None and written is not None:
            written.unlink()


def save_picture(path, picture: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):  # OpenCV writes BGR
        raise VideoError(f"could not write {path}")

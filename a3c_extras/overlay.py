"""The overlay: the game screen with, beside it, what the agent sees (its 42x42 input) and what it decides
(its policy and the critic's value). The recorder (videos.py) draws every frame of a video with --overlay
this way; tools/overlay_picture.py redraws docs/overlay.png.
"""

import cv2
import numpy as np

# Layout of the overlay, in pixels. The panels are as tall as the game screen (210 for Atari).
INPUT_SCALE = 4  # the 42x42 input, enlarged with nearest-neighbour to 168x168 (an 80x80 one as far as fits: 2x)
MARGIN = 8
TITLE = 16  # room above the input for its title
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


def compose_frame(
    screen: np.ndarray,
    observation: np.ndarray,
    probs: np.ndarray,
    value: float,
    action_names: list[str],
    action: int | None = None,
) -> np.ndarray:
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
    sharp, centred vertically under a title (a larger input by a whole factor that fits the height)."""
    grey = observation_to_grey(observation)
    scale = max(1, min(INPUT_SCALE, (height - 2 * MARGIN - TITLE) // grey.shape[0]))
    size = grey.shape[0] * scale
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


def policy_panel(probs: np.ndarray, value: float, action_names: list[str], action: int, height: int) -> np.ndarray:
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


def save_picture(path, picture: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):  # OpenCV writes BGR
        raise OSError(f"could not write {path}")

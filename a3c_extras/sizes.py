"""The opt-in sizes of the course's network (--frame-size, --lstm-size). The defaults are the course's:
42x42 frames, which its four stride-2 convolutions bring down to 32 x 3 x 3 = 288 features, and an LSTM
of 256. --frame-size 80 keeps the course's 80x80 resize without its last shrink to 42x42: the same four
convolutions give 80 -> 40 -> 20 -> 10 -> 5, 32 x 5 x 5 = 800 features. The sizes of a run's network
travel with its arguments (a checkpoint's "args"), so a checkpoint rebuilds the network it holds."""

from collections.abc import Mapping

COURSE_FRAME_SIZE = 42
COURSE_LSTM_SIZE = 256
FRAME_SIZES = (COURSE_FRAME_SIZE, 80)  # 80: the course's intermediate resize, kept as the frame


def conv_side(conv, side: int) -> int:
    """The height (= width) of what `conv` makes of a square input of `side` pixels."""
    (kernel, _), (stride, _), (padding, _), (dilation, _) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    return (side + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def flattened_size(model, frame_size: int) -> int:
    """How many features the model's four convolutions (conv1..conv4, built before the LSTM) flatten a
    frame_size x frame_size frame to: the LSTM's input size (288 for the course's 42x42 frames)."""
    side = frame_size
    for conv in (model.conv1, model.conv2, model.conv3, model.conv4):
        side = conv_side(conv, side)
    return model.conv4.out_channels * side * side


def frame_size(link) -> int:
    """The frame size create_atari_env makes for a run's link (its params.frame_size); the course's 42
    without a run or without the field."""
    return getattr(getattr(link, "params", None), "frame_size", COURSE_FRAME_SIZE)


def of(args) -> dict:
    """The network's sizes, as ActorCritic's keywords, from a run's params or a checkpoint's saved
    arguments (a dict); checkpoints from before these options were trained at the course's sizes."""
    get = args.get if isinstance(args, Mapping) else lambda name, default: getattr(args, name, default)
    return {
        "frame_size": get("frame_size", COURSE_FRAME_SIZE),
        "lstm_size": get("lstm_size", COURSE_LSTM_SIZE),
    }


def describe(network: dict) -> str:
    """'80x80 frames and an LSTM of 512', for messages."""
    return f"{network['frame_size']}x{network['frame_size']} frames and an LSTM of {network['lstm_size']}"


def weights_mismatch(model, state_dict: dict) -> str | None:
    """Why `state_dict` does not fit `model` (the first tensor whose name or shape differs), or None."""
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    saved = {name: tuple(tensor.shape) for name, tensor in state_dict.items()}
    for name in sorted(expected.keys() | saved.keys()):
        if expected.get(name) != saved.get(name):
            found, wanted = saved.get(name, "missing"), expected.get(name, "absent")
            return f"{name} is {found} in the checkpoint, {wanted} in the network"
    return None


def resume_mismatch(requested, data: dict, path) -> str | None:
    """A network size asked for on the command line that differs from the run's (a checkpoint's weights
    load only into a network of their own sizes), as one line; None when they agree."""
    saved, wanted = of(data["args"]), of(requested)
    if saved == wanted:
        return None
    flags = " ".join(f"--{name.replace('_', '-')} {wanted[name]}" for name in wanted if wanted[name] != saved[name])
    return (
        f"{flags} does not fit the run of {path}: its network has {describe(saved)}, fixed for the run "
        "(leave the flag out)"
    )

"""Errors as the user reads them: one line."""

import re
import signal
import traceback
from pathlib import Path


def first_line(error: Exception, limit: int = 200) -> str:
    """An error's message in one line (torch's and Ray's run over many), or its type's name if it has none."""
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:limit]


def where_raised(error: BaseException) -> str:
    """An exception in one line with the place it was raised: 'ValueError: bad (train.py:42)'."""
    frames = traceback.extract_tb(error.__traceback__)
    place = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {first_line(error)}{place}"


def describe_exit(exitcode: int) -> str:
    """Why a process ended, from its exit code (negative: the signal that killed it)."""
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


def describe_os_error(error: Exception) -> str:
    """A failed write in one line: 'No space left on device' rather than errno's tuple."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror + (f": {error.filename}" if error.filename else "")
    return f"{type(error).__name__}: {first_line(error)}"


def why_actor_died(error) -> str:
    """Why an actor is gone, in one line: Ray's message names the cause after its first line, then lists the
    usual suspects."""
    text = str(error).split("Some common causes")[0]
    for pattern in (r"Worker exit detail:(.+)", r"The actor is dead because(.+)", r"(\w+(?:Error|Exception): .+)"):
        found = re.search(pattern, text, re.DOTALL)
        if found:
            return " ".join(found.group(1).split())[:200]
    return first_line(error)


def plural(count: int, word: str) -> str:
    """A count with its word, for the one-line messages: 1 worker, 2 workers."""
    return f"{count} {word}{'' if count == 1 else 's'}"

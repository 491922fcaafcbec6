"""The one restart rule of a run, for its child processes and for a cluster's machines alike."""

import time
from collections import deque
from collections.abc import Callable


class RestartPolicy:
    """Something that dies is started again, unless it died more than `max_restarts` times within `window`
    seconds: then the policy gives up on it. Deaths are timed on a monotonic clock, since a window on the wall
    clock stretches or shrinks when that clock is set; tests pass a fake `clock`."""

    def __init__(self, max_restarts: int, window: float, clock: Callable[[], float] = time.monotonic):
        self.max_restarts, self.window, self.clock = max_restarts, window, clock
        self.deaths: dict[str, deque] = {}  # name -> when it died, within the window
        self.restarts: dict[str, int] = {}  # name -> how often it was started again, in all

    def died(self, name: str, why: str) -> str | None:
        """Note that `name` died of `why`: None to start it again, or why the policy gives up on it."""
        now = self.clock()
        deaths = self.deaths.setdefault(name, deque())
        deaths.append(now)
        while deaths[0] < now - self.window:
            deaths.popleft()
        if len(deaths) > self.max_restarts:
            return f"{why} (died {len(deaths)} times within {self.window:g} s)"
        self.restarts[name] = self.restarts.get(name, 0) + 1
        return None

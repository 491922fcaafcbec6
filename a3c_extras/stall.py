"""The stuck-agent guard of the test process and the evaluation command: the one rule for when an episode
has stalled and is cut short.

A game that waits for FIRE to serve (Breakout) waits forever for an agent that never presses it: no point,
no lost life, nothing happens until the 108,000-frame cap (27,000 agent steps). So the guard applies only
to games whose action set has FIRE, and only while the game may be waiting for it: from the start of an
episode and from each lost life, until the agent presses FIRE or a point is scored. An episode that waits
so for STALL_STEPS agent steps is cut short. Once play is on, nothing is cut: a ball in play that hits no
brick for a long while is play, not a stall. A game that serves by itself (Pong) scores its first point
within seconds, whatever the agent does, and is then played out. A FIRE the game ignores would end the
wait as far as the guard can tell; the 108,000-frame cap still ends such an episode.

STALL_STEPS = 1,000 agent steps (67 s of play at frameskip 4), measured with our create_atari_env: in
ALE/Pong-v5 and PongDeterministic-v4 the first point comes after 64 agent steps whichever action is
repeated (a game of one repeated action is lost 21-0 in 764 steps); in Breakout (both ids, with
--fire-reset as it was trained) the shipped agent's longest wait for its own FIRE or a point was 49 agent
steps over 32 games, greedy and sampled, and from a serve to the first point at most 167. Play itself
is not counted: there the longest stretch without a point or a lost life was 1,746 agent steps (the
shipped agent on the last bricks of a wall, over 36 games), which a count of play too would have cut."""

STALL_STEPS = 1_000


class StallGuard:
    """`check(action, reward, done)` after each step of an episode: True when the game has waited STALL_STEPS
    agent steps for a FIRE that did not come, and the episode is to be cut short. It starts over when an
    episode ends (done, or cut short), so one guard serves episode after episode."""

    def __init__(self, env, steps: int = STALL_STEPS):
        game = env.unwrapped
        meanings = game.get_action_meanings() if hasattr(game, "get_action_meanings") else []  # Atari's
        self.fire = {action for action, meaning in enumerate(meanings) if "FIRE" in meaning}
        self.ale, self.steps = getattr(game, "ale", None), steps
        self.waited, self.lives = 0, None  # agent steps the game may have waited for FIRE; None: play is on

    def check(self, action, reward, done: bool = False) -> bool:
        if not self.fire:
            return False  # a game without FIRE never waits for it
        lives = self.ale.lives() if self.ale is not None else None
        if self.lives is not None and lives is not None and lives < self.lives:
            self.waited = 0  # a lost life: the game may wait for a new serve
        self.lives = lives
        if reward or int(action) in self.fire:
            self.waited = None  # served, or points scored: play is on
        elif self.waited is not None:
            self.waited += 1
        stalled = not done and self.waited is not None and self.waited >= self.steps
        if done or stalled:
            self.waited, self.lives = 0, None
        return stalled

    def note(self, stalled: bool) -> str:
        """What the test process's line adds for an episode cut short."""
        return cut_short_note(self.steps) if stalled else ""


def cut_short_note(steps: int = STALL_STEPS) -> str:
    """The words for an episode cut short, the same in the test process's line and the evaluation command's."""
    return f", cut short: no FIRE to serve in {steps:,} agent steps"

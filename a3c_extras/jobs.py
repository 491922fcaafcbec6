"""The jobs around the run's loop, each one small listener (as Stable-Baselines3's callbacks are). The loop
(supervision.Run) hands each event (a3c_extras/events.py) to every job's on_event, calls on_tick twice a second,
and on_end once, in the order of run.jobs, after the children stopped and the final checkpoint was saved."""

import sys
import time
from collections import deque

from a3c_extras import events
from a3c_extras.links import budget_reached
from a3c_extras.schedule import learning_rate


class Job:
    """A job that does nothing: each job overrides what it needs."""

    def on_event(self, event) -> None:
        pass

    def on_tick(self) -> None:
        pass

    def on_end(self) -> None:
        pass


class Every:
    """True once `interval` seconds passed since it last said so (a monotonic clock)."""

    def __init__(self, interval: float):
        self.interval, self.last = interval, time.monotonic()

    def __call__(self) -> bool:
        due = time.monotonic() - self.last >= self.interval
        self.last = time.monotonic() if due else self.last
        return due


class Stopper(Job):
    """Why the run stops: Ctrl-C or SIGTERM (their names in `signals`), a budget, or `failure` (GaveUp: status 1)."""

    def __init__(self, run, signals: list):
        self.run, self.signals, self.failure = run, signals, None

    def on_event(self, event) -> None:
        if isinstance(event, events.GaveUp) and self.failure is None:
            self.failure = event

    def reason(self) -> str | None:
        args = self.run.args
        if self.signals:
            return f"stopped by {self.signals[0]}"
        if budget_reached(self.run.steps(), args.max_steps):
            return f"step budget of {args.max_steps:,} reached"
        if args.max_time and self.run.sitting_seconds() >= args.max_time:
            return f"time budget of {args.max_time:g} s reached"
        return None


class Saver(Job):
    """The checkpoint and the learning curve every --save-interval seconds (the final ones are the run's)."""

    def __init__(self, run):
        self.run, self.due = run, Every(run.args.save_interval)

    def on_tick(self) -> None:
        if self.due():
            self.run.save()


class Recorder(Job):
    """progress.csv, a row per game and per evaluation episode; events.csv, a row per restart, machine lost or rejoined
    and failure, each also told in a line on stderr but the failure (the run's last line names it)."""

    INCIDENTS = {  # event: (its kind in events.csv, its line on stderr)
        events.Restarted: ("restart", "{name} died: {why}; restarted (its restart {restarts})"),
        events.MachineLost: ("machine lost", "{name} lost: {why}; {left}"),
        events.MachineRejoined: ("machine rejoined", "{name} rejoined with the global weights"),
        events.GaveUp: ("gave up", None),
    }

    def __init__(self, run):
        self.run, self.record = run, run.record

    def on_event(self, event) -> None:
        seconds, record = self.run.elapsed(), self.record
        if isinstance(event, events.TrainGame):
            record.game("train", seconds, event.steps, event.rank, event.ret, event.length)
        elif isinstance(event, events.EvalEpisode):  # eval_cut: cut short by the stuck-agent guard, not a finished game
            record.game(
                "eval_cut" if event.cut_short else "eval", seconds, event.steps, None, event.reward, event.length
            )
        elif isinstance(event, events.WriteFailed):
            record.write_failed(event.what, event.why, seconds, self.run.steps())
        elif type(event) in self.INCIDENTS:
            kind, line = self.INCIDENTS[type(event)]
            record.event(seconds, self.run.steps(), kind, event.name, getattr(event, "why", ""))
            if line is not None:
                print("main.py: " + line.format(**event._asdict()), file=sys.stderr, flush=True)

    def on_end(self) -> None:
        self.record.close()


class StatusLine(Job):
    """Every --status-interval seconds a line of the run's figures on stdout and its speed for the charts (Speed);
    both once more at the end, with the run's own part last (a cluster's machines)."""

    def __init__(self, run):
        self.run, self.due = run, Every(run.args.status_interval)
        self.returns, self.last_eval, self.nonfinite, self.restarts = deque(maxlen=100), "-", {}, 0
        self.since, self.steps_then = time.monotonic(), run.steps()

    def on_event(self, event) -> None:
        if isinstance(event, events.TrainGame):
            self.returns.append(event.ret)
        elif isinstance(event, events.EvalEpisode):
            self.last_eval = f"{event.reward}{' (cut short)' * event.cut_short}"
        elif isinstance(event, events.NonFinite):
            self.nonfinite[event.rank] = event.skipped
        self.restarts += isinstance(event, events.Restarted)

    def on_tick(self) -> None:
        if self.due():
            print(self.line(), flush=True)
            self.chart_speed()

    def on_end(self) -> None:
        if self.run.steps() > self.steps_then:  # a run shorter than --status-interval has no other
            self.chart_speed()
        print(self.line(), flush=True)

    def chart_speed(self) -> None:
        now, steps = time.monotonic(), self.run.steps()
        sps = (steps - self.steps_then) / max(now - self.since, 1e-9)
        self.run.emit(events.Speed(steps, sps, learning_rate(self.run.args, steps)))
        self.since, self.steps_then = now, steps

    def line(self) -> str:
        run, args, steps, best = self.run, self.run.args, self.run.steps(), self.run.counts.best_reward()
        returns, seconds = self.returns, run.sitting_seconds()
        left = [f"{max(args.max_steps - steps, 0):,} steps"] * bool(args.max_steps)
        left += [f"{max(args.max_time - seconds, 0):,.0f} s"] * bool(args.max_time)
        parts = [
            f"steps {steps:,}",
            f"{(steps - run.start_steps) / max(seconds, 1e-9):,.0f} steps/s",
            returns and f"train return (last {len(returns)}) {sum(returns) / len(returns):.1f}",
            f"last eval {self.last_eval}",
            f"best (mean of {args.best_window}) {'-' if best is None else f'{best:g}'}",
            self.nonfinite and f"skipped non-finite updates {sum(self.nonfinite.values())}",
            self.restarts and f"restarts {self.restarts}",
            run.record.failed_writes and f"failed writes {run.record.failed_writes}",
            left and "left " + ", ".join(left),
            run.describe(),  # a cluster's machines
        ]
        return " | ".join(part for part in parts if part)

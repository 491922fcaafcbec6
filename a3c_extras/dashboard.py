"""The run's TensorBoard charts: event files in the run directory, written by the main process as events arrive.

`tensorboard --logdir runs` shows every run side by side. Every chart is against total agent steps, so a resumed
run (a new event file in the same directory) simply continues its lines. The dashboard is a side show: a write
that fails is reported once, in one line on stderr, and the dashboard turns itself off; it never raises into the
run, and it does not wait on the disk (a thread of TensorBoard's writer does the writing).
"""

import sys

from a3c_extras.errors import first_line
from a3c_extras.events import EvalEpisode, Losses, Speed, TrainGame
from a3c_extras.jobs import Job

FLUSH_SECS = 30  # how often the writer's thread puts what it has on disk, for a TensorBoard that is watching
MAX_QUEUE = 1000  # events waiting for the writer's thread: the caller waits only once that many are behind


class Dashboard(Job):
    """One of the run's jobs (a3c_extras/jobs.py): each event that has a chart is drawn as it comes."""

    def __init__(self, run_dir, flush_secs: float = FLUSH_SECS):
        self.run_dir = str(run_dir)
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

            self.writer = SummaryWriter(log_dir=self.run_dir, max_queue=MAX_QUEUE, flush_secs=flush_secs)
        except Exception as error:
            self._turn_off(error)

    @property
    def on(self) -> bool:
        return self.writer is not None

    def on_event(self, event) -> None:
        if isinstance(event, TrainGame):
            self.train_game(event.steps, event.ret, event.length)
        elif isinstance(event, EvalEpisode):
            chart = self.eval_cut_short if event.cut_short else self.eval_episode
            chart(event.steps, event.reward, event.length)
        elif isinstance(event, Losses):
            self.losses(event.steps, event.policy, event.value, event.entropy, event.grad_norm)
        elif isinstance(event, Speed):
            self.speed(event.steps, event.sps, event.lr)

    def on_end(self) -> None:
        self.close()

    def train_game(self, steps: int, ret: float, length: int) -> None:
        """A training game ended: its return and its length in agent steps."""
        self._scalars(steps, {"charts/episodic_return": ret, "charts/episodic_length": length})

    def speed(self, steps: int, sps: float, lr: float) -> None:
        """Agent steps per second over all workers, and the learning rate in use."""
        self._scalars(steps, {"charts/SPS": sps, "charts/learning_rate": lr})

    def losses(self, steps: int, policy_loss: float, value_loss: float, entropy: float, grad_norm: float) -> None:
        """One update's losses, the policy's entropy, and the norm of its gradient."""
        self._scalars(
            steps,
            {
                "losses/policy_loss": policy_loss,
                "losses/value_loss": value_loss,
                "losses/entropy": entropy,
                "losses/grad_norm": grad_norm,
            },
        )

    def eval_episode(self, steps: int, reward: float, length: int) -> None:
        """An episode of the test process: its reward and length."""
        self._scalars(steps, {"eval/episode_reward": reward, "eval/episode_length": length})

    def eval_cut_short(self, steps: int, reward: float, length: int) -> None:
        """An episode of the test process that the stuck-agent guard cut short (a3c_extras/stall.py): not a
        finished game, so under tags of its own, apart from the evaluation's score."""
        self._scalars(steps, {"eval/cut_short_reward": reward, "eval/cut_short_length": length})

    def close(self) -> None:
        """Put what is left on disk and stop the writer's thread."""
        writer, self.writer = self.writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception as error:
                self._turn_off(error)

    def _scalars(self, steps: int, values: dict) -> None:
        if self.writer is None:
            return
        try:
            for tag, value in values.items():
                self.writer.add_scalar(tag, float(value), global_step=int(steps))
        except Exception as error:
            self._turn_off(error)

    def _turn_off(self, error: Exception) -> None:
        writer, self.writer = self.writer, None
        print(
            f"TensorBoard: cannot write to {self.run_dir} ({type(error).__name__}: {first_line(error)}); "
            "the run goes on without its charts",
            file=sys.stderr,
            flush=True,
        )
        if writer is not None:
            try:
                writer.close()
            except Exception:
                pass  # already reported: the dashboard is off

"""The run's events: what a child process, the pool of children and a cluster's machines tell the run, one small
typed record each, handed to every job around the run's loop (a3c_extras/jobs.py). They travel pickled (on a
child's pipe, in a machine's reply through Ray), so each is a plain named tuple."""

from collections import namedtuple

# A training game ended: its raw (unclipped) score, as progress.csv keeps it.
TrainGame = namedtuple("TrainGame", "rank steps ret length")
# An episode of the test process; one the stuck-agent guard cut short is not a finished game.
EvalEpisode = namedtuple("EvalEpisode", "steps reward length cut_short", defaults=[False])
# A worker's losses, entropy and gradient norm, averaged over its updates of the last few seconds.
Losses = namedtuple("Losses", "rank steps policy value entropy grad_norm")
# A worker skipped an update whose loss or gradient was not finite: `skipped` of them so far.
NonFinite = namedtuple("NonFinite", "rank skipped")
# A file of the test process (best.pt) could not be written; the run goes on.
WriteFailed = namedtuple("WriteFailed", "what why")
# A child's exception in one line, told just before it exits: the pool names its death by it.
ChildError = namedtuple("ChildError", "name why")
# A child process, or a cluster machine's group, died and was started again (its `restarts`-th time).
Restarted = namedtuple("Restarted", "name why restarts")
# A cluster's machine was dropped; `left`: what the run goes on with.
MachineLost = namedtuple("MachineLost", "name why left")
# A cluster machine's group, started again by Ray, took the global weights.
MachineRejoined = namedtuple("MachineRejoined", "name")
# What ends the run with status 1: a child that died too often, no machine left, the parameter server gone.
GaveUp = namedtuple("GaveUp", "name why")
# The run's agent steps per second over the last status interval, and the learning rate then.
Speed = namedtuple("Speed", "steps sps lr")

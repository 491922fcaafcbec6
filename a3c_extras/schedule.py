"""The learning rate's schedule: --lr throughout (the course), or with --lr-decay-until the A3C paper's
linear decay to 0 (Mnih et al., 2016, anneal the rate over the whole run). The decay starts where it was
asked for: at step 0 of a new run, or at the checkpoint's step of the sitting that first passed this
value (--resume keeps it, so the line goes on from sitting to sitting)."""


def learning_rate(args, steps: int) -> float:
    """The rate for an update at `steps` agent steps (the run's total, all workers and sittings)."""
    until = getattr(args, "lr_decay_until", 0)
    if not until:
        return args.lr
    start = getattr(args, "lr_decay_from", 0)
    left = (until - steps) / (until - start)  # 1 where the decay started, 0 at --lr-decay-until
    return args.lr * min(1.0, max(0.0, left))


def set_learning_rate(optimizer, args, steps: int) -> None:
    """Every parameter group of this process's optimizer at the scheduled rate. The rate lives in each
    worker's own copy of the optimizer (the shared part is its statistics), so each worker sets its own."""
    rate = learning_rate(args, steps)
    for group in optimizer.param_groups:
        group["lr"] = rate

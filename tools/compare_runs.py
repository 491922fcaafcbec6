"""Learning curves of several runs side by side, against agent steps and against hours of training.

    python tools/compare_runs.py --run "K = 1=runs/k1" --run "K = 16=runs/k16" --out docs/breakout/k_curves.png
    python tools/compare_runs.py --run "ours=runs/defaults" --reference 0.35e6:6 1.7e6:8.3 --out curve.png

Each curve is the mean raw score of the last 100 training games (as the status line shows it). With
--at, it also prints each run's mean at those agent steps, and the hours it took to get there; with
--levels, when each run first reached each score, by its training return and by its greedy evaluations:

    python tools/compare_runs.py --run "recipe=training/breakout-recipe" --levels 100 200 300 --out curve.png

A run's own clock counts whatever else shared its machine. --rate LABEL=STEPS_PER_S puts that run's hours at its
agent steps over a throughput measured apart (benchmarks/throughput.py on an idle machine) instead:

    python tools/compare_runs.py --run "recipe=training/breakout-recipe" --rate recipe=2569 --out curve.png
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from a3c_extras.cli import fail, one_line_errors  # noqa: E402
from a3c_extras.run_record import levels_reached, read_progress, training_curve  # noqa: E402


def labelled_run(text: str) -> tuple[str, Path]:
    label, _, path = text.rpartition("=")
    csv_path = Path(path) / "progress.csv" if Path(path).is_dir() else Path(path)
    if not label or not csv_path.is_file():
        raise argparse.ArgumentTypeError(f"expected LABEL=RUN_DIR with a progress.csv, got '{text}'")
    return label, csv_path


def labelled_rate(text: str) -> tuple[str, float]:
    label, _, rate = text.rpartition("=")
    try:
        if label and float(rate) > 0:
            return label, float(rate)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected LABEL=STEPS_PER_S with a positive rate, got '{text}'")


def point(text: str) -> tuple[float, float]:
    try:
        steps, score = text.split(":")
        return float(steps), float(score)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected STEPS:SCORE, got '{text}'")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=labelled_run, action="append", required=True, metavar="LABEL=RUN_DIR")
    parser.add_argument(
        "--reference",
        type=point,
        nargs="*",
        default=[],
        metavar="STEPS:SCORE",
        help="published points to draw beside the runs",
    )
    parser.add_argument("--reference-label", default="reference implementation (published)")
    parser.add_argument(
        "--at",
        type=float,
        nargs="*",
        default=[],
        metavar="STEPS",
        help="print each run's mean training return at these agent steps",
    )
    parser.add_argument(
        "--levels",
        type=float,
        nargs="*",
        default=[],
        metavar="SCORE",
        help="print when each run first reached these scores: the mean of its last 100 training games, "
        "and of its last 5 greedy evaluation episodes",
    )
    parser.add_argument(
        "--rate",
        type=labelled_rate,
        action="append",
        default=[],
        metavar="LABEL=STEPS_PER_S",
        help="the run's hours from its agent steps at this throughput, measured apart, instead of its own clock",
    )
    parser.add_argument("--title", default="A3C on Breakout")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = one_line_errors(parser).parse_args(argv)
    rates = dict(args.rate)
    unknown = set(rates) - {label for label, _ in args.run}
    if unknown:
        fail(f"compare_runs.py: error: --rate for no --run of that label: {', '.join(sorted(unknown))}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_steps, by_hours) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    for label, csv_path in args.run:
        steps, rewards, seconds = read_progress(csv_path)["train"]
        if len(rewards) == 0:
            fail(f"compare_runs.py: error: {csv_path} has no training games yet")
        if label in rates:
            seconds = np.asarray(steps, dtype=float) / rates[label]
        curve_steps, curve_hours, curve = training_curve(steps, rewards, seconds)
        by_steps.plot(curve_steps, curve, label=label)
        by_hours.plot(curve_hours, curve, label=label)
        for at in args.at:
            index = np.searchsorted(curve_steps, at)
            if index < len(curve):
                print(f"{label}: {curve[index]:.1f} at {at:,.0f} agent steps ({curve_hours[index]:.2f} h)")
            else:
                print(f"{label}: did not reach {at:,.0f} agent steps (last {curve_steps[-1]:,})")
        if args.levels:
            reached = levels_reached(csv_path, args.levels)
            for kind, words in (("train", "training return (last 100)"), ("eval", "evaluations (last 5)")):
                for level, first in zip(args.levels, reached[kind]):
                    hours = first[0] / rates[label] / 3600 if first and label in rates else first and first[1]
                    when = f"{first[0]:,} agent steps, {hours:.1f} h" if first else "not reached"
                    print(f"{label}: {words} {level:g}: {when}")
    if args.reference:
        ref_steps, ref_scores = zip(*args.reference)
        by_steps.plot(ref_steps, ref_scores, "ks--", markersize=5, label=args.reference_label)
    by_steps.set_xlabel("total agent steps")
    by_hours.set_xlabel("hours of training" + (" (at throughput measured apart, where given)" if rates else ""))
    for ax in (by_steps, by_hours):
        ax.set_ylabel("training return, mean of last 100 games")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
    fig.suptitle(args.title)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The main process's memory while it redraws learning_curve.png, as it does at every save of a long run: the
resident memory after each redraw of one progress.csv, with the clean-up after each redraw (as main.py runs
it) or without it (--no-collect, the drawing alone, as before that clean-up existed).

    python benchmarks/curve_memory.py --progress training/breakout/progress.csv
    python benchmarks/curve_memory.py --progress training/breakout/progress.csv --no-collect
"""

import argparse
import sys
import tempfile
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from a3c_extras.run_record import draw_learning_curve, plot_learning_curve  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--progress", type=Path, required=True, help="a run's progress.csv")
    p.add_argument("--redraws", type=int, default=12, help="(default: 12)")
    p.add_argument("--no-collect", action="store_true", help="draw without the clean-up after each redraw")
    args = p.parse_args(argv)
    if not args.progress.is_file():
        print(f"curve_memory.py: {args.progress} is not a file", file=sys.stderr)
        return 2
    process = psutil.Process()
    rss = [process.memory_info().rss / 2**20]
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "learning_curve.png"
        for _ in range(args.redraws):
            if args.no_collect:
                draw_learning_curve(args.progress, png, "curve_memory", 100)
            else:
                plot_learning_curve(args.progress, png, "curve_memory")
            rss.append(process.memory_info().rss / 2**20)
    with open(args.progress) as f:
        rows = sum(1 for _ in f) - 1
    growth = (rss[-1] - rss[2]) / (len(rss) - 3) if len(rss) > 3 else float("nan")
    print(f"progress.csv: {rows:,} rows; {'without' if args.no_collect else 'with'} the clean-up after each redraw")
    print("RSS (MB) before and after each redraw: " + " ".join(f"{r:.1f}" for r in rss))
    print(f"growth per redraw from the 2nd on: {growth:+.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

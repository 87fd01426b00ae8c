"""``python -m tests.sim``: run the deterministic simulation (``make sim``).

    python -m tests.sim --seeds 500            # seeds 0..499, a summary
    python -m tests.sim --seed 123             # one seed, replayed; minimal trace on failure
    python -m tests.sim --seeds 200 --mutation ack-before-isr   # a broken rule, found?

Exit status 1 when a seed broke a guarantee (the command to replay it is printed).
"""

from __future__ import annotations

import argparse
import sys

from tests.sim.mutations import MUTATIONS
from tests.sim.run import default_jobs, replay, run_seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.sim", description=__doc__.splitlines()[0]
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--seeds", type=int, default=500, help="run seeds FIRST..FIRST+N-1")
    group.add_argument("--seed", type=int, help="replay one seed with its (minimal) trace")
    parser.add_argument("--first", type=int, default=0, help="the first seed of --seeds")
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="processes")
    parser.add_argument("--mutation", choices=sorted(MUTATIONS), help="break one rule on purpose")
    args = parser.parse_args(argv)
    if args.seed is not None:
        result, text = replay(args.seed, args.mutation)
        print(text)
        return 0 if result.ok else 1
    summary = run_seeds(
        range(args.first, args.first + args.seeds), jobs=args.jobs, mutation=args.mutation
    )
    print(summary.report())
    if summary.failures:
        seed = summary.failures[0][0]
        extra = f" --mutation {args.mutation}" if args.mutation else ""
        print(f"replay the first: make sim SEED={seed} (python -m tests.sim --seed {seed}{extra})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

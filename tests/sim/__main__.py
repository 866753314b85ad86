"""Run the deterministic Raft simulation over many seeds.

    python -m tests.sim --seeds 200 [--steps 2000] [--first 0] [--jobs 2]
    python -m tests.sim --seed 17 --trace        # replay one seed, printing its event trace

The last line is always `N seeds, F failures`; each failing seed prints the command that
replays it. The same seed always produces the same trace (its digest is printed with --seed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

from tests.sim.simulation import WORKER_CONTEXT, SimConfig, run_seed


def _run(seed_and_steps: tuple[int, int]) -> tuple[int, list[str], dict[str, int], int]:
    seed, steps = seed_and_steps
    problems, sim = run_seed(SimConfig.for_seed(seed, steps))
    return seed, problems, sim.stats, len(sim.committed)


def run_many(first: int, count: int, steps: int, jobs: int) -> tuple[Counter[str], list[tuple[int, list[str]]]]:
    """Run seeds [first, first + count) on `jobs` processes; return (totals of what happened,
    failures). The totals count committed entries, crashes, conf changes, snapshots sent..."""
    failures: list[tuple[int, list[str]]] = []
    totals: Counter[str] = Counter()
    work = [(seed, steps) for seed in range(first, first + count)]
    with ProcessPoolExecutor(max_workers=jobs, mp_context=WORKER_CONTEXT) as pool:
        for seed, problems, stats, entries in pool.map(_run, work, chunksize=4):
            totals.update(stats)
            totals["committed"] += entries
            if problems:
                failures.append((seed, problems))
    return totals, failures


def replay_command(seed: int, steps: int) -> str:
    return f"python -m tests.sim --seed {seed} --steps {steps} --trace"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    parser.add_argument("--first", type=int, default=0, help="first seed")
    parser.add_argument("--steps", type=int, default=2000, help="simulated ticks per seed before healing")
    parser.add_argument("--seed", type=int, help="run this one seed only")
    parser.add_argument("--trace", action="store_true", help="with --seed: print every event")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    args = parser.parse_args()

    if args.seed is not None:
        problems, sim = run_seed(SimConfig.for_seed(args.seed, args.steps), keep_trace=args.trace)
        for line in sim.trace_lines or []:
            print(line)
        for problem in problems:
            print(f"FAIL seed {args.seed}: {problem}")
        print(f"trace digest {sim.digest()}  stats {sim.stats}  committed entries {len(sim.committed)}")
        print(f"1 seeds, {1 if problems else 0} failures")
        sys.exit(1 if problems else 0)

    started = time.monotonic()
    totals, failures = run_many(args.first, args.seeds, args.steps, args.jobs)
    for seed, problems in failures:
        print(f"FAIL seed {seed}: {problems[0]}")
        print(f"  replay: {replay_command(seed, args.steps)}")
    print(f"{time.monotonic() - started:.1f}s; " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())))
    print(f"{args.seeds} seeds, {len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

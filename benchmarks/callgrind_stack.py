"""Instructions a call under callgrind: bench_stack.py's contenders, counted instead of timed.

Timings on a shared 2-core machine move 10-30 % between runs; instruction counts under
``valgrind --tool=callgrind`` of the sequential and hit paths repeat to 0.1 % whatever else the
machine does. Under ``gather`` they move 5-10 % between sittings: what the contenders do there
depends on elapsed time, which valgrind stretches (aiolimiter refills by it; RateLimit's sliding
log folds a second's entries into a count past 4,096 of them), so compare gather counts taken in
one sitting only. Each contender and path runs in a fresh interpreter under callgrind at two
call counts; the difference of the two totals over the difference of the counts is the cost of
one call (start-up, imports and warm-up cancel out).
Before the measured calls, what exists (the imports of every contender, the contender built and
warmed up) is frozen out of the garbage collector (``gc.freeze()``, the rule ``bench_stack``
times by, the same for every contender): a collection then walks what the calls keep alive,
not the start-up heap. Left in sight (``--no-freeze``, the measure before #36's last gather
round), the heap's 33,000 objects were walked by a full collection that llmguard's 3,000 calls
under ``gather`` met and its 1,000 did not, while the library stack met one in each run (they
cancel out). Frozen, a full collection still falls where the calls' survivors reach the
collector's threshold: the library stack's 3,000 calls meet one (each queued call keeps 38
objects alive), llmguard's none (25 each).
The table gives each contender's cost over the bare await in the same path (a hit, which awaits
nothing: its own count), and its ratio to the library stack (tenacity + aiolimiter + Semaphore
+ TTLCache) where #36 sets its targets.

    python benchmarks/callgrind_stack.py                 # stacks: seq, gather, hit (~4 min)
    python benchmarks/callgrind_stack.py --paths miss    # a cache miss: Cache alone (#36)
    python benchmarks/callgrind_stack.py --layers        # also each layer alone, sequential
    python benchmarks/callgrind_stack.py --paths gather --keep /tmp/cg   # and keep each run's
        # callgrind.out there (named by contender, path and count): ``callgrind_annotate
        # --inclusive=yes`` of the two counts' files, differenced, shows where a call's go

Needs ``valgrind`` (Debian's package). Run with ``PYTHONHASHSEED=0`` set for you, so dict and
set layouts (and with them the counts) repeat from run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: Freeze the heap built before the measured calls (``--no-freeze``: leave it, module doc).
FREEZE = True
#: Where each run's callgrind output is kept (``--keep``), or None: a temporary directory.
KEEP: Path | None = None
#: Calls per path at the two counts (gather: the calls started at once; 100 run at a time).
COUNTS = {"seq": (300, 1300), "gather": (1000, 3000), "hit": (1000, 5000)}
#: ``miss``: #36 bounds a cache miss over the bare await (6 us), not against the library
#: stack: the Cache layer alone, sequential misses (what its row measures).
MISS = "Cache (miss)"

STACK_ROWS = ("bare await send_message()", "tenacity+aiolimiter+Semaphore+TTLCache",
              "llmguard 8-layer stack")


def inner(name: str, path: str, n: int) -> None:
    """Runs one contender's path once (what callgrind counts); ``name`` as bench_stack names it."""
    import bench_stack

    build = {**bench_stack.STACKS, **bench_stack.LAYERS}[name]
    # Under valgrind a call runs some 50x slower: on a loaded machine the 3,000 calls under
    # ``gather`` queued at the library stack's semaphore outlast its 30 s ``asyncio.timeout``
    # and tenacity gives up (the run fails). The bound never fires in the measured path, so it
    # is raised here, for every contender alike (``bench_stack`` reads it as it builds/calls).
    bench_stack.TIMEOUT = 3600.0

    async def main() -> None:
        fn = build()
        for i in range(20):
            await fn(f"warm-up {i}")
        prompts = bench_stack.prompts_for(n)
        if FREEZE:  # as ``bench_stack.sample`` does before it times a contender
            gc.collect()
            gc.freeze()
        await bench_stack.PATHS[path](fn, prompts)

    asyncio.run(main())


def instructions(name: str, path: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        if KEEP is not None:
            out = KEEP / f"{re.sub(r'[^A-Za-z0-9]+', '_', name).strip('_')}.{path}.{n}.out"
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                        sys.executable, __file__, "--inner", name, path, str(n),
                        *([] if FREEZE else ["--no-freeze"])],
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no total in callgrind's output for {name} {path}")
        return int(match.group(1))


def per_call(name: str, path: str) -> float:
    low, high = COUNTS[path]
    return (instructions(name, path, high) - instructions(name, path, low)) / (high - low)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inner", nargs=3, metavar=("NAME", "PATH", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--paths", default="seq,gather,hit",
                        help="comma-separated: seq, gather, hit, miss")
    parser.add_argument("--layers", action="store_true", help="also each layer alone (sequential)")
    parser.add_argument("--no-freeze", action="store_true",
                        help="leave the start-up heap in the collector's sight (module doc)")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep each run's callgrind output in DIR (for callgrind_annotate)")
    args = parser.parse_args()
    global FREEZE, KEEP
    FREEZE = not args.no_freeze
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        KEEP = args.keep
    if args.inner:
        inner(args.inner[0], args.inner[1], int(args.inner[2]))
        return
    paths = args.paths.split(",")
    if unknown := [path for path in paths if path not in COUNTS and path != "miss"]:
        parser.error(f"--paths: unknown {', '.join(unknown)}; use seq, gather, hit and/or "
                     "miss, comma-separated (e.g. --paths seq,hit)")
    if shutil.which("valgrind") is None:
        sys.exit("callgrind_stack.py needs valgrind: apt-get install valgrind")
    import bench_stack

    bare_name, libs, stack = STACK_ROWS
    print("| path | library stack | llmguard stack | x library stack |")
    print("|---|---:|---:|---:|")
    for path in paths:
        if path == "miss":
            bare = per_call(bare_name, "seq")
            print(f"| miss: Cache alone, sequential (bare await {bare:,.0f}) | | "
                  f"{per_call(MISS, 'seq') - bare:,.0f} | |", flush=True)
            continue
        # A hit awaits nothing: its own count, not one over the bare await's loop turn.
        bare = 0.0 if path == "hit" else per_call(bare_name, path)
        lib_cost, lg_cost = per_call(libs, path) - bare, per_call(stack, path) - bare
        label = "hit (its own count)" if path == "hit" else f"{path} (bare await {bare:,.0f})"
        print(f"| {label} | {lib_cost:,.0f} | {lg_cost:,.0f} | {lg_cost / lib_cost:.2f}x |",
              flush=True)
    if args.layers:
        bare = per_call(bare_name, "seq")
        print("\n| layer alone, sequential | instructions over the bare await |\n|---|---:|")
        for name in bench_stack.LAYERS:
            if name != bare_name and "SDK MeterProvider" not in name:
                print(f"| {name} | {per_call(name, 'seq') - bare:,.0f} |", flush=True)


if __name__ == "__main__":
    main()

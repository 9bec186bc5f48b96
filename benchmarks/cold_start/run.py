"""Cold start of `gvtool sample --n 64` against a plain PyTorch script doing the same, several runs.

    python benchmarks/cold_start/run.py [BUNDLE] [--runs 7] [--json out.json]

Each run is a fresh process; the two commands alternate so that a noisy machine slows both alike.
Wall time is measured around the process, peak memory is the child's own max RSS (os.wait4).
Reports medians and the ratios, and the floor: a process that only imports numpy and onnxruntime. The PyTorch
baseline needs the bundle's source run (it loads the checkpoint); without it only gvtool is measured.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one fresh process."""
    t0 = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {child.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", nargs="?")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parents[1]))
    from gvtool.manifest import read_manifest
    from gvtool.runtime.bundles import newest_bundle

    bundle = Path(args.bundle) if args.bundle else newest_bundle()
    run_dir = Path(read_manifest(bundle).source.get("run_dir", ""))
    # A regular `pip install` compiles every module to bytecode; an editable install under
    # PYTHONDONTWRITEBYTECODE=1 (as on this project's machines) would recompile gvtool in every
    # process (~30 ms). Compile once, as pip does, so the start-up of the installed tool is measured.
    compileall.compile_dir(HERE.parents[1] / "gvtool", quiet=1)
    script = Path(sys.executable).parent / "gvtool"  # the console script a user runs
    gvtool = [str(script)] if script.is_file() else [sys.executable, "-m", "gvtool.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        commands = {"gvtool sample --n 64": [*gvtool, "sample", str(bundle), "--n", "64",
                                             "--device", "cpu", "--out", f"{tmp}/gvtool.png"]}
        # The floor under any onnxruntime tool: the interpreter plus importing its two libraries.
        commands["python: import numpy, onnxruntime"] = [sys.executable, "-c", "import numpy, onnxruntime"]
        if (run_dir / "checkpoint.safetensors").is_file():
            commands["plain PyTorch script"] = [sys.executable, str(HERE / "torch_sample.py"), str(run_dir),
                                                "--n", "64", "--out", f"{tmp}/torch.png"]
        else:
            print(f"source run {run_dir} not found: PyTorch baseline skipped")
        for argv in commands.values():  # warm the page cache: we measure start-up, not the disk
            measure(argv)
        samples = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():
                samples[name].append(measure(argv))
    result = {name: {"wall_s_median": statistics.median(w for w, _ in runs),
                     "peak_mb_median": statistics.median(m for _, m in runs), "runs": runs}
              for name, runs in samples.items()}
    print(f"cold start, {args.runs} runs each, medians ({bundle}):")
    for name, r in result.items():
        print(f"  {name:24s} {r['wall_s_median']:6.3f} s  {r['peak_mb_median']:7.1f} MB peak")
    g, floor = result["gvtool sample --n 64"], result["python: import numpy, onnxruntime"]
    print(f"  gvtool spends {1000 * (g['wall_s_median'] - floor['wall_s_median']):.0f} ms above the import floor")
    if "plain PyTorch script" in result:
        t = result["plain PyTorch script"]
        print(f"  gvtool is {t['wall_s_median'] / g['wall_s_median']:.1f}x faster to start and uses "
              f"{t['peak_mb_median'] / g['peak_mb_median']:.1f}x less memory")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

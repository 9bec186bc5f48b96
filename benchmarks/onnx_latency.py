"""onnxruntime CPU latency of every graph and precision in a bundle: a quick look, not `gvtool bench`.

    python benchmarks/onnx_latency.py BUNDLE [--batch-sizes 1,64] [--seconds 1.0] [--rounds 5]

Sessions for all graphs are created first; then each round times every (graph, precision, batch)
for `seconds` in turn, so a noisy machine slows them alike. Reports the median latency over the
rounds' medians, and the ratio to fp32 of the same graph and batch.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort

from gvtool.manifest import read_manifest, verify_file


def feed_for(entry, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feed = {}
    for spec in entry.inputs:
        shape = (batch, *spec.shape[1:])
        feed[spec.name] = (np.zeros(shape, np.int64) if spec.dtype == "int64"
                           else rng.standard_normal(shape).astype(np.float32))
    return feed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--batch-sizes", default="1,64")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    manifest = read_manifest(args.bundle)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    rng = np.random.default_rng(0)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sessions = {key: ort.InferenceSession(str(verify_file(args.bundle, e.file, e.sha256)), options,
                                          providers=["CPUExecutionProvider"]) for key, e in manifest.graphs.items()}
    cases = [(key, b, feed_for(manifest.graphs[key], b, rng)) for key in sessions for b in batches]
    for key, _, feed in cases:  # warm-up
        sessions[key].run(None, feed)
    samples: dict[tuple[str, int], list[float]] = {(k, b): [] for k, b, _ in cases}
    for _ in range(args.rounds):
        for key, batch, feed in cases:
            times, end = [], time.perf_counter() + args.seconds
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                sessions[key].run(None, feed)
                times.append(time.perf_counter() - t0)
            samples[(key, batch)].append(statistics.median(times))
    print(f"onnxruntime {ort.__version__} CPU, {args.rounds} rounds x {args.seconds} s; median latency, items/s, vs fp32")
    for (key, batch), values in samples.items():
        latency = statistics.median(values)
        graph, precision = key.split(".")
        base = statistics.median(samples[(f"{graph}.fp32", batch)]) if f"{graph}.fp32" in manifest.graphs else latency
        size = manifest.graphs[key].bytes / 1024
        print(f"  {key:13s} {size:7,.0f} KiB  batch {batch:4d}: {latency * 1e3:8.3f} ms  "
              f"{batch / latency:10,.0f} items/s  x{base / latency:.2f} vs fp32")


if __name__ == "__main__":
    main()

"""Running a benchmark: every (graph, backend, precision, device, batch) case, side by side.

Backends are measured interleaved, round by round within each (graph, precision, device, batch)
group, so that a noisy machine slows all of them alike and their ratios hold. Runners are made
by the caller (the torch baseline lives outside the runtime); a case that cannot run here becomes a
skipped result with its reason, never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from gvtool.errors import GvtoolError
from gvtool.manifest import TEXT_EMBEDDING, ModelInfo
from gvtool.bench.core import BenchResult, latency_stats, measured, skipped, time_calls
from gvtool.runtime.feeds import feeds_for
from gvtool.runtime.runner import GraphRunner

ROUNDS = 3  # interleaved windows per case: enough to average out a burst of load on a shared machine


@dataclass
class Case:
    graph: str
    backend: str
    precision: str
    device: str
    make: Callable[[], GraphRunner] | None   # None: cannot run here, see skip_reason
    skip_reason: str = ""
    flops_per_item: float | None = None
    note: str = ""
    inputs: tuple = ()                       # the graph's input TensorSpecs (empty: the encoder's or decoder's own)


class ChainedRunner:
    """Two runners as one: the first's first output (an encoder's mean) is the second's "latents" (a decoder's).
    What a translation path runs, timed from image to image."""

    def __init__(self, first: GraphRunner, second: GraphRunner):
        self.first, self.second = first, second
        self.backend = first.backend
        self._join((first, second), (first, second))

    def _join(self, batched, synced) -> None:
        """The chain's max batch, the least of the `batched` runners' (those run on the whole batch), and a sync that
        syncs every `synced` runner that has one."""
        limits = [r.max_batch for r in batched if r.max_batch is not None]
        self.max_batch = min(limits) if limits else None
        syncs = [s for s in (getattr(r, "sync", None) for r in synced) if s is not None]
        if syncs:
            self.sync = lambda: [s() for s in syncs]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.second.run({"latents": self.first.run(feeds)[0]})

    def close(self) -> None:
        for runner in (self.first, self.second):
            getattr(runner, "close", lambda: None)()


class PromptRunner(ChainedRunner):
    """A text encoder's runner, then a decoder's: what `gvtool sample --prompt P --n B` runs, timed from a prompt's
    tokens to B images. The prompt (the feeds' first row) is encoded once and conditions all B images; the noise is
    drawn once per batch size, outside the timed calls after the first. A joint model's prompt draws the latents
    through its caption expert (`prior`) in between; another's embedding goes to the decoder beside the latents."""

    def __init__(self, text_encoder: GraphRunner, decoder: GraphRunner, latent_dim: int,
                 prior: GraphRunner | None = None):
        super().__init__(text_encoder, decoder)
        self.prior = prior
        after = (decoder,) if prior is None else (prior, decoder)
        self._join(after, (text_encoder, *after))  # the text encoder runs one prompt whatever the batch
        self.latent_dim = latent_dim
        self._noise: dict[int, np.ndarray] = {}

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        n = len(next(iter(feeds.values())))
        if n not in self._noise:
            self._noise[n] = np.random.default_rng(0).standard_normal((n, self.latent_dim)).astype(np.float32)
        embedding = np.repeat(self.first.run({name: value[:1] for name, value in feeds.items()})[0], n, axis=0)
        if self.prior is None:
            return self.second.run({"latents": self._noise[n], TEXT_EMBEDDING: embedding})
        latents = self.prior.run({TEXT_EMBEDDING: embedding, "latent_noise": self._noise[n]})[0]
        return self.second.run({"latents": latents})

    def close(self) -> None:
        super().close()
        if self.prior is not None:
            getattr(self.prior, "close", lambda: None)()


def run_cases(model: ModelInfo, cases: list[Case], batch_sizes: list[int], *, warmup_s: float, duration_s: float,
              iterations: int | None, log: Callable[[str], None] = lambda line: None) -> list[BenchResult]:
    runners: dict[int, GraphRunner | str] = {}
    for i, case in enumerate(cases):
        if case.make is None:
            runners[i] = case.skip_reason
            continue
        try:
            runners[i] = case.make()
        except (GvtoolError, ImportError, RuntimeError) as error:
            runners[i] = f"{type(error).__name__}: {error}".split("\n")[0]
    rng = np.random.default_rng(0)
    results = []
    groups: dict[tuple, list[int]] = {}
    for i, case in enumerate(cases):
        groups.setdefault((case.graph, case.precision, case.device), []).append(i)
    for (graph, precision, device), members in groups.items():
        for batch in batch_sizes:
            feeds = feeds_for(model, graph, batch, rng, cases[members[0]].inputs or None)
            timed: dict[int, list[float]] = {}
            gpu: dict[int, list] = {}   # per timed call, the runner's last_timings (GPU seconds by segment)
            for i in members:
                runner = runners[i]
                if isinstance(runner, str):
                    results.append(_skip(cases[i], batch, runner))
                elif runner.max_batch is not None and batch > runner.max_batch:
                    results.append(_skip(cases[i], batch, f"batch {batch} is above the engine profile's max {runner.max_batch}"))
                else:
                    timed[i] = []
            for round_ in range(ROUNDS):
                share = None if iterations is None else iterations // ROUNDS + (round_ < iterations % ROUNDS)
                if share == 0:  # fewer iterations than rounds: the first rounds take them all
                    continue
                for i in timed:
                    call, per_call = _call_keeping_gpu_timings(runners[i], feeds)
                    samples = time_calls(call, warmup_s=warmup_s if round_ == 0 else warmup_s / 4,
                                         duration_s=duration_s / ROUNDS, iterations=share,
                                         sync=getattr(runners[i], "sync", None))
                    timed[i] += samples
                    if per_call is not None:  # the warm-up calls come first: keep the timed ones
                        gpu.setdefault(i, []).extend(per_call[len(per_call) - len(samples):])
            for i, samples in timed.items():
                results.append(_measured(cases[i], batch, samples, gpu.get(i)))
                log(f"{graph} {precision} {device} batch {batch:4d} {cases[i].backend:22s} "
                    f"p50 {results[-1].latency.p50 * 1e3:8.3f} ms  {results[-1].items_per_s:12,.0f} items/s")
    for runner in runners.values():
        getattr(runner, "close", lambda: None)()
    return results


def _skip(case: Case, batch: int, reason: str) -> BenchResult:
    return skipped(case.graph, case.backend, case.precision, case.device, batch, reason)


def _call_keeping_gpu_timings(runner: GraphRunner, feeds: dict) -> tuple[Callable[[], object], list | None]:
    """The call to time, and the list it fills with the runner's `last_timings` after each call;
    None for a runner that reports no GPU timings (onnxruntime, torch), whose call stays bare."""
    run = runner.run
    if not hasattr(runner, "last_timings"):
        return (lambda: run(feeds)), None
    per_call: list = []
    keep = per_call.append  # bound once: the timed call pays for one append, not for lookups

    def call():
        run(feeds)
        keep(runner.last_timings)

    return call, per_call


def _measured(case: Case, batch: int, samples: list[float], gpu: list | None = None) -> BenchResult:
    # GPU statistics only when every timed call reported them: a partial set would describe other calls.
    complete = bool(gpu) and all(timings is not None for timings in gpu)
    stats = {field: latency_stats([timings[key] for timings in gpu]) if complete else None
             for field, key in (("device_compute", "compute"), ("copy_in", "copy_in"), ("copy_out", "copy_out"))}
    return measured(case.graph, case.backend, case.precision, case.device, batch, latency_stats(samples),
                    flops_per_item=case.flops_per_item, note=case.note, **stats)

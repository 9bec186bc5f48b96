"""The TensorRT runner (gvtool/runtime/trt_runner.py), against fakes of `tensorrt` and the CUDA runtime.

The fake engine computes its outputs from the bytes the runner copied into fake device memory, and
copies and executions happen only when the stream is synchronized, so these tests prove that inputs
go host -> device -> engine -> device -> host through the right buffers, in the manifest's order.

What the fakes do NOT model, so what these tests never ran for real: deserializing a real engine and
TensorRT's checks when it does (version, GPU, plugins, DLA), real kernels and their numerics, the
real cuda-python argument conversion (ints for pointers, int(cudaStream_t) for TensorRT, enums for
the copy kind), pinned-memory limits, alignment, the device being current in another thread, error
codes of a real driver (and sticky errors after a failed kernel), execution contexts' own device
memory, and the memory and time a real engine takes. TestRealTensorRT covers part of that where
tensorrt and a GPU exist.

GPU timing and CUDA graphs are tested against a fake GPU clock: each queued copy or execution adds a
fixed time, events stamp the clock, and a captured graph replays the captured closures. Never run
for real, so not shown here: real event resolution (~0.5 us) and the time of real kernels; whether
a real engine can be captured at all (plugins, data-dependent shapes, DLA, engines that allocate or
synchronize in enqueue); whether TensorRT's internal state really forbids replaying a graph after
the context ran another shape (the runner assumes it does and executes once before replaying);
cudaStreamCaptureModeGlobal's interaction with other threads' CUDA calls; graph-launch overhead; and
the CUDA 11 bindings (cudaGraphInstantiateWithFlags is assumed there and in 12).
"""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fake_tensorrt import GPU_MS, fake_engine_bytes, make_fake_cudart, make_fake_trt
from gvtool.errors import BackendUnavailableError, BadBundleError, BadInputError
from gvtool.manifest import EngineEntry, GraphEntry, Manifest, ModelInfo, TensorSpec, Validation
from gvtool.runtime.trt_runner import TensorRTRunner, engine_for, engine_mismatch, tensorrt_environment

ROOT = Path(__file__).resolve().parents[2]
LATENT, SIDE, MAX_BATCH = 4, 16, 8
PROFILE = {"min": 1, "opt": 4, "max": MAX_BATCH}
ORIN = ("NVIDIA Jetson Orin Nano", "8.7", "10.3.0")   # what the default fakes say this machine is
VALIDATION = Validation(0.0, 0.0, "max_abs", 1e-4, True, (1, 16))

DECODER = GraphEntry(graph="decoder", precision="fp16", file="decoder.fp16.onnx", sha256="0" * 64, bytes=0, opset=17,
                     ir_version=8, validation=VALIDATION,
                     inputs=(TensorSpec("latents", "float32", ("batch", LATENT)), TensorSpec("labels", "int64", ("batch",))),
                     outputs=(TensorSpec("images", "float32", ("batch", 1, SIDE, SIDE)),))
ENCODER = GraphEntry(graph="encoder", precision="fp32", file="encoder.onnx", sha256="0" * 64, bytes=0, opset=17,
                     ir_version=8, validation=VALIDATION,
                     inputs=(TensorSpec("images", "float32", ("batch", 1, SIDE, SIDE)),),
                     outputs=(TensorSpec("mean", "float32", ("batch", LATENT)),
                              TensorSpec("logvar", "float32", ("batch", LATENT))))
# The engine's own tensor order differs from the manifest's: the runner must go by name.
ENGINE_ORDER = {"decoder.fp16": ("images", "labels", "latents"), "encoder.fp32": ("logvar", "images", "mean")}


def reference(feeds: dict) -> dict:
    """What the fake engines compute, from whatever reaches fake device memory (and, in the tests, from the feeds)."""
    if "latents" in feeds:     # decoder: every pixel mixes a latent and the label; (n, 4), (n,) -> (n, 1, 16, 16)
        latents, labels = feeds["latents"], feeds["labels"]
        pixel = np.arange(SIDE * SIDE)
        images = latents[:, pixel % LATENT] * (pixel // SIDE + 1) + labels[:, None].astype(np.float32)
        return {"images": images.reshape(-1, 1, SIDE, SIDE).astype(np.float32)}
    flat = feeds["images"].reshape(len(feeds["images"]), -1)          # encoder: (n, 1, 16, 16) -> (n, 4), (n, 4)
    return {"mean": flat[:, :LATENT] * 2, "logvar": flat[:, -LATENT:] - 1}


def feeds_for(graph: GraphEntry, n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    if graph.graph == "decoder":
        return {"latents": rng.normal(size=(n, LATENT)).astype(np.float32), "labels": rng.integers(0, 10, size=n)}
    return {"images": rng.uniform(-1, 1, size=(n, 1, SIDE, SIDE)).astype(np.float32)}


def engine_entry(bundle: Path, graph: GraphEntry, data: bytes | None = None, target=ORIN, dla_core=None,
                 profile=None, name: str | None = None) -> EngineEntry:
    """Write an engine file into `bundle` and describe it as the builder would."""
    data = data if data is not None else fake_engine_bytes(graph.inputs, graph.outputs, target[2],
                                                           profile=(1, 4, MAX_BATCH), order=ENGINE_ORDER[graph.key])
    file = f"engines/{name or graph.key}.engine"
    (bundle / "engines").mkdir(parents=True, exist_ok=True)
    (bundle / file).write_bytes(data)
    gpu_name, capability, version = target
    return EngineEntry(graph_key=graph.key, precision=graph.precision, file=file, sha256=hashlib.sha256(data).hexdigest(),
                       bytes=len(data), profile=dict(profile or PROFILE), tensorrt_version=version, gpu_name=gpu_name,
                       compute_capability=capability, dla_core=dla_core)


@pytest.fixture
def fakes():
    cudart = make_fake_cudart()
    return make_fake_trt(cudart=cudart, compute=reference), cudart


@pytest.fixture(params=[DECODER, ENCODER], ids=["decoder", "encoder"])
def graph(request):
    return request.param


@pytest.fixture
def runner(tmp_path, fakes, graph):
    trt, cudart = fakes
    with TensorRTRunner(tmp_path, engine_entry(tmp_path, graph), graph, trt=trt, cudart=cudart) as runner:
        yield runner


def context(trt):
    (only,) = trt.contexts
    return only


class TestAllocatesOnce:
    def test_one_device_and_one_pinned_buffer_per_tensor_sized_for_max_batch(self, runner, fakes, graph):
        _, cudart = fakes
        specs = (*graph.inputs, *graph.outputs)
        sizes = [MAX_BATCH * np.dtype(t.dtype).itemsize * int(np.prod(t.shape[1:])) for t in specs]
        assert [c[1] for c in cudart.calls if c[0] == "cudaMalloc"] == sizes
        assert [c[1] for c in cudart.calls if c[0] == "cudaMallocHost"] == sizes
        assert cudart.count("cudaStreamCreate") == 1

    def test_many_runs_allocate_nothing_new(self, runner, fakes, graph):
        trt, cudart = fakes
        before = {call: cudart.count(call) for call in ("cudaMalloc", "cudaMallocHost", "cudaStreamCreate")}
        for n in (1, 3, MAX_BATCH, 2):
            runner.run(feeds_for(graph, n))
        assert {call: cudart.count(call) for call in before} == before
        assert len(trt.runtimes) == len(trt.engines) == len(trt.contexts) == 1

    def test_tensor_addresses_are_set_once_in_init(self, runner, fakes, graph):
        trt, cudart = fakes
        addresses = [c for c in context(trt).calls if c[0] == "set_tensor_address"]
        for n in (2, 5):
            runner.run(feeds_for(graph, n))
        assert [c for c in context(trt).calls if c[0] == "set_tensor_address"] == addresses
        assert sorted(name for _, name, _ in addresses) == sorted(t.name for t in (*graph.inputs, *graph.outputs))
        assert {ptr for _, _, ptr in addresses} == set(cudart.device)   # each its own device buffer


class TestRun:
    @pytest.mark.parametrize("n", [1, 5, MAX_BATCH], ids=["batch1", "middle", "max"])
    def test_values_shapes_and_dtypes_in_manifest_order(self, runner, graph, n):
        feeds = feeds_for(graph, n)
        outputs = runner.run(feeds)
        expected = reference(feeds)
        assert len(outputs) == len(graph.outputs)
        for spec, output in zip(graph.outputs, outputs):
            assert output.shape == (n, *spec.shape[1:]) and output.dtype == np.dtype(spec.dtype), spec.name
            np.testing.assert_array_equal(output, expected[spec.name])

    def test_set_input_shape_gets_each_calls_batch(self, runner, fakes, graph):
        trt, _ = fakes
        for n in (3, 1, MAX_BATCH):
            runner.run(feeds_for(graph, n))
        shapes = [call[1:] for call in context(trt).calls if call[0] == "set_input_shape"]
        expected = [(t.name, (n, *t.shape[1:])) for n in (3, 1, MAX_BATCH) for t in graph.inputs]
        assert shapes == expected

    def test_copies_only_the_items_given(self, runner, fakes, graph):
        _, cudart = fakes
        runner.run(feeds_for(graph, 3))
        copies = sorted(c[3] for c in cudart.calls if c[0] == "cudaMemcpyAsync")
        sizes = [3 * np.dtype(t.dtype).itemsize * int(np.prod(t.shape[1:])) for t in (*graph.inputs, *graph.outputs)]
        assert copies == sorted(sizes)

    def test_a_smaller_batch_after_a_larger_one_returns_fresh_values(self, runner, graph):
        runner.run(feeds_for(graph, MAX_BATCH, seed=1))
        feeds = feeds_for(graph, 2, seed=2)
        outputs = runner.run(feeds)
        for spec, output in zip(graph.outputs, outputs):
            np.testing.assert_array_equal(output, reference(feeds)[spec.name])

    def test_results_are_copies_the_next_run_leaves_alone(self, runner, graph):
        first_feeds = feeds_for(graph, 4, seed=1)
        first = runner.run(first_feeds)
        runner.run(feeds_for(graph, 4, seed=2))
        np.testing.assert_array_equal(first[0], reference(first_feeds)[graph.outputs[0].name])

    def test_inputs_of_a_castable_dtype_are_accepted(self, runner, graph):
        feeds = {k: v.astype(np.float64) if v.dtype == np.float32 else v.astype(np.int32)
                 for k, v in feeds_for(graph, 2).items()}
        outputs = runner.run(feeds)
        expected = reference({k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in feeds.items()})
        np.testing.assert_allclose(outputs[0], expected[graph.outputs[0].name])


class TestFeedChecks:
    @pytest.mark.parametrize("n", [0, MAX_BATCH + 1])
    def test_a_batch_outside_the_profile_raises_before_any_copy(self, runner, fakes, graph, n):
        _, cudart = fakes
        with pytest.raises(ValueError, match=f"takes batches of 1 to {MAX_BATCH} items, got {n}"):
            runner.run(feeds_for(graph, n))
        assert cudart.count("cudaMemcpyAsync") == 0

    def test_inputs_that_disagree_on_the_batch(self, tmp_path, fakes):
        trt, cudart = fakes
        feeds = feeds_for(DECODER, 3)
        feeds["labels"] = feeds["labels"][:2]
        with TensorRTRunner(tmp_path, engine_entry(tmp_path, DECODER), DECODER, trt=trt, cudart=cudart) as runner:
            with pytest.raises(ValueError, match="disagree on the batch size"):
                runner.run(feeds)

    def test_missing_or_extra_input_names(self, runner, graph):
        with pytest.raises(ValueError, match="takes inputs"):
            runner.run({**feeds_for(graph, 2), "extra": np.zeros(2)})
        with pytest.raises(ValueError, match="takes inputs"):
            runner.run({})

    def test_a_wrong_item_shape(self, runner, graph):
        spec = graph.inputs[0]
        with pytest.raises(ValueError, match=f"input {spec.name} takes shape"):
            runner.run({**feeds_for(graph, 2), spec.name: np.zeros((2, 3), dtype=spec.dtype)})

    def test_an_uncastable_dtype(self, runner, graph):
        spec = graph.inputs[0]
        bad = np.zeros((2, *spec.shape[1:]), dtype=np.complex64)
        with pytest.raises(ValueError, match=f"input {spec.name} takes float32, got complex64"):
            runner.run({**feeds_for(graph, 2), spec.name: bad})


class TestClose:
    def test_frees_every_buffer_and_the_stream_exactly_once(self, tmp_path, fakes):
        trt, cudart = fakes
        runner = TensorRTRunner(tmp_path, engine_entry(tmp_path, DECODER), DECODER, trt=trt, cudart=cudart)
        runner.run(feeds_for(DECODER, 2))
        devices, pinned = sorted(cudart.device), sorted(cudart.pinned)   # live allocations: one per tensor
        runner.close()
        assert len(devices) == len(pinned) == 3
        assert sorted(c[1] for c in cudart.calls if c[0] == "cudaFree") == devices
        assert sorted(c[1] for c in cudart.calls if c[0] == "cudaFreeHost") == pinned
        assert cudart.count("cudaStreamDestroy") == 1
        assert cudart.device == {} and cudart.pinned == {} and cudart.streams == {} and cudart.events == {}

    def test_is_idempotent(self, tmp_path, fakes):
        trt, cudart = fakes
        runner = TensorRTRunner(tmp_path, engine_entry(tmp_path, DECODER), DECODER, trt=trt, cudart=cudart)
        runner.close()
        calls = len(cudart.calls)
        runner.close()
        assert len(cudart.calls) == calls

    def test_with_block_closes(self, tmp_path, fakes):
        trt, cudart = fakes
        with TensorRTRunner(tmp_path, engine_entry(tmp_path, DECODER), DECODER, trt=trt, cudart=cudart) as runner:
            runner.run(feeds_for(DECODER, 1))
        assert cudart.device == {} and cudart.pinned == {} and cudart.streams == {}

    def test_run_after_close_is_refused(self, tmp_path, fakes):
        trt, cudart = fakes
        runner = TensorRTRunner(tmp_path, engine_entry(tmp_path, DECODER), DECODER, trt=trt, cudart=cudart)
        runner.close()
        with pytest.raises(BackendUnavailableError, match="was closed"):
            runner.run(feeds_for(DECODER, 1))


class TestRefusedEngines:
    @pytest.mark.parametrize("cudart_kwargs, trt_version, here", [
        (dict(name=b"NVIDIA GeForce RTX 4090", major=8, minor=9), "10.3.0",
         "NVIDIA GeForce RTX 4090 (sm 8.9) with TensorRT 10.3.0"),
        (dict(major=8, minor=6), "10.3.0", "NVIDIA Jetson Orin Nano (sm 8.6) with TensorRT 10.3.0"),
        (dict(), "10.4.0", "NVIDIA Jetson Orin Nano (sm 8.7) with TensorRT 10.4.0"),
    ], ids=["gpu", "compute-capability", "tensorrt-version"])
    def test_an_engine_for_another_machine_says_both_and_how_to_rebuild(self, tmp_path, cudart_kwargs, trt_version, here):
        cudart = make_fake_cudart(**cudart_kwargs)
        trt = make_fake_trt(version=trt_version, cudart=cudart, compute=reference)
        entry = engine_entry(tmp_path, DECODER)
        with pytest.raises(BadBundleError) as caught:
            TensorRTRunner(tmp_path, entry, DECODER, trt=trt, cudart=cudart)
        message = str(caught.value)
        assert "was built for NVIDIA Jetson Orin Nano (sm 8.7) with TensorRT 10.3.0" in message
        assert f"this is {here}" in message and "`gvtool export BUNDLE --trt`" in message
        assert trt.runtimes == [] and cudart.count("cudaMalloc") == 0

    def test_a_tampered_engine_is_refused_before_tensorrt_reads_it(self, tmp_path, fakes):
        trt, cudart = fakes
        entry = engine_entry(tmp_path, DECODER)
        (tmp_path / entry.file).write_bytes((tmp_path / entry.file).read_bytes() + b"x")
        with pytest.raises(BadBundleError, match="does not match the manifest"):
            TensorRTRunner(tmp_path, entry, DECODER, trt=trt, cudart=cudart)
        assert trt.runtimes == []

    def test_an_engine_tensorrt_cannot_load(self, tmp_path, fakes):
        trt, cudart = fakes
        entry = engine_entry(tmp_path, DECODER, data=b"not an engine")
        with pytest.raises(BadBundleError, match="could not load engines/decoder.fp16.engine.*gvtool export BUNDLE --trt"):
            TensorRTRunner(tmp_path, entry, DECODER, trt=trt, cudart=cudart)
        assert cudart.count("cudaMalloc") == 0

    def test_io_names_that_differ_from_the_manifest(self, tmp_path, fakes):
        trt, cudart = fakes
        other = dataclasses.replace(DECODER, inputs=(TensorSpec("z", "float32", ("batch", LATENT)), DECODER.inputs[1]))
        data = fake_engine_bytes(other.inputs, other.outputs, profile=(1, 4, MAX_BATCH))
        entry = engine_entry(tmp_path, DECODER, data=data)
        with pytest.raises(BadBundleError) as caught:
            TensorRTRunner(tmp_path, entry, DECODER, trt=trt, cudart=cudart)
        assert "the engine has inputs ['labels', 'z']" in str(caught.value)
        assert "the manifest lists inputs ['labels', 'latents']" in str(caught.value)
        assert cudart.count("cudaMalloc") == 0

    def test_an_input_that_is_an_output_in_the_engine(self, tmp_path, fakes):
        trt, cudart = fakes
        data = fake_engine_bytes(DECODER.inputs[:1], (*DECODER.outputs, DECODER.inputs[1]), profile=(1, 4, MAX_BATCH))
        with pytest.raises(BadBundleError, match="does not fit decoder.fp16"):
            TensorRTRunner(tmp_path, engine_entry(tmp_path, DECODER, data=data), DECODER, trt=trt, cudart=cudart)

    @pytest.mark.parametrize("dtype, shown", [("int32", "int32"), ("bfloat16", "BF16")])
    def test_a_dtype_that_differs_from_the_manifest(self, tmp_path, fakes, dtype, shown):
        trt, cudart = fakes
        data = fake_engine_bytes(DECODER.inputs, DECODER.outputs, profile=(1, 4, MAX_BATCH), dtypes={"labels": dtype})
        with pytest.raises(BadBundleError, match=f"tensor labels is {shown}.* int64 .* in the manifest"):
            TensorRTRunner(tmp_path, engine_entry(tmp_path, DECODER, data=data), DECODER, trt=trt, cudart=cudart)

    def test_a_batch_profile_that_differs_from_the_manifest(self, tmp_path, fakes):
        trt, cudart = fakes
        data = fake_engine_bytes(DECODER.inputs, DECODER.outputs, profile=(1, 4, 16))
        with pytest.raises(BadBundleError, match="takes batches 1 to 16 for latents, but the manifest says 1 to 8"):
            TensorRTRunner(tmp_path, engine_entry(tmp_path, DECODER, data=data), DECODER, trt=trt, cudart=cudart)

    def test_an_engine_built_from_another_graph(self, tmp_path, fakes):
        trt, cudart = fakes
        with pytest.raises(BadBundleError, match="was built from decoder.fp16, not encoder.fp32"):
            TensorRTRunner(tmp_path, engine_entry(tmp_path, DECODER), ENCODER, trt=trt, cudart=cudart)


class TestBackendMissing:
    def test_missing_tensorrt_says_what_to_install(self, tmp_path, monkeypatch):
        monkeypatch.setitem(sys.modules, "tensorrt", None)   # `import tensorrt` now raises ImportError
        with pytest.raises(BackendUnavailableError) as caught:
            TensorRTRunner(tmp_path, engine_entry(tmp_path, DECODER), DECODER, cudart=make_fake_cudart())
        message = str(caught.value)
        assert message.startswith("TensorRT is not available here")
        assert "pip install 'gvtool[trt]'" in message and "sudo apt install python3-libnvinfer" in message

    def test_missing_cuda_bindings_say_what_to_install(self, monkeypatch):
        for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
            monkeypatch.setitem(sys.modules, name, None)
        with pytest.raises(BackendUnavailableError, match="pip install cuda-python"):
            tensorrt_environment(0, trt=make_fake_trt())

    def test_environment_names_this_machine(self):
        trt = make_fake_trt(version="10.3.0")
        assert tensorrt_environment(0, trt=trt, cudart=make_fake_cudart())[2:] == ORIN

    def test_a_device_beyond_the_machine_is_bad_input(self, tmp_path, fakes):
        trt, cudart = fakes
        with pytest.raises(BadInputError, match="--device 1 does not exist"):
            TensorRTRunner(tmp_path, engine_entry(tmp_path, DECODER), DECODER, device_index=1, trt=trt, cudart=cudart)


class TestCudaFailures:
    @pytest.mark.parametrize("call, number", [("cudaStreamCreate", 1), ("cudaEventCreate", 3), ("cudaMalloc", 2),
                                              ("cudaMallocHost", 3)])
    def test_a_failed_allocation_names_the_call_and_frees_what_was_made(self, tmp_path, call, number):
        cudart = make_fake_cudart(failures={call: number})
        trt = make_fake_trt(cudart=cudart, compute=reference)
        with pytest.raises(BackendUnavailableError, match=f"{call} failed with cudaError"):
            TensorRTRunner(tmp_path, engine_entry(tmp_path, DECODER), DECODER, trt=trt, cudart=cudart)
        assert cudart.device == {} and cudart.pinned == {} and cudart.streams == {} and cudart.events == {}

    @pytest.mark.parametrize("call, number", [("cudaMemcpyAsync", 1), ("cudaMemcpyAsync", 3), ("cudaStreamSynchronize", 1),
                                              ("cudaEventRecord", 2), ("cudaEventElapsedTime", 3)])
    def test_a_failed_copy_or_sync_names_the_call(self, tmp_path, call, number):
        cudart = make_fake_cudart(failures={call: number})
        trt = make_fake_trt(cudart=cudart, compute=reference)
        with TensorRTRunner(tmp_path, engine_entry(tmp_path, DECODER), DECODER, trt=trt, cudart=cudart) as runner:
            with pytest.raises(BackendUnavailableError, match=f"{call} failed with cudaErrorLaunchFailure"):
                runner.run(feeds_for(DECODER, 2))

    def test_execute_returning_false(self, tmp_path):
        cudart = make_fake_cudart()
        trt = make_fake_trt(cudart=cudart, compute=reference, execute_ok=False)
        with TensorRTRunner(tmp_path, engine_entry(tmp_path, DECODER), DECODER, trt=trt, cudart=cudart) as runner:
            with pytest.raises(BackendUnavailableError, match="execute_async_v3 returned False"):
                runner.run(feeds_for(DECODER, 2))

    def test_no_execution_context(self, tmp_path):
        cudart = make_fake_cudart()
        trt = make_fake_trt(cudart=cudart, compute=reference, context_ok=False)
        with pytest.raises(BackendUnavailableError, match="could not create an execution context"):
            TensorRTRunner(tmp_path, engine_entry(tmp_path, DECODER), DECODER, trt=trt, cudart=cudart)
        assert cudart.count("cudaMalloc") == 0

    def test_a_failed_free_is_reported_after_freeing_the_rest(self, tmp_path):
        cudart = make_fake_cudart(failures={"cudaFree": 1})
        trt = make_fake_trt(cudart=cudart, compute=reference)
        runner = TensorRTRunner(tmp_path, engine_entry(tmp_path, DECODER), DECODER, trt=trt, cudart=cudart)
        with pytest.raises(BackendUnavailableError, match="cudaFree failed"):
            runner.close()
        assert cudart.count("cudaFree") == 3 and cudart.pinned == {} and cudart.streams == {}
        runner.close()   # closed: no second attempt
        assert cudart.count("cudaFree") == 3


def event_records(cudart) -> list[tuple]:
    """(event handle, stream handle) of every cudaEventRecord, in order."""
    return [(int(c[1]), int(c[2])) for c in cudart.calls if c[0] == "cudaEventRecord"]


def expected_timings(graph: GraphEntry, gpu_ms=GPU_MS) -> dict:
    """What last_timings must be on the fake GPU clock: one copy per input and per output, one execution."""
    return {"copy_in": len(graph.inputs) * gpu_ms["copy_in"] / 1e3, "compute": gpu_ms["compute"] / 1e3,
            "copy_out": len(graph.outputs) * gpu_ms["copy_out"] / 1e3}


class TestGpuTiming:
    def test_four_events_are_created_once_in_init(self, runner, fakes, graph):
        _, cudart = fakes
        assert cudart.count("cudaEventCreate") == 4
        for n in (1, 3, MAX_BATCH):
            runner.run(feeds_for(graph, n))
        assert cudart.count("cudaEventCreate") == 4 and len(cudart.events) == 4

    def test_close_destroys_each_event_once(self, tmp_path, fakes):
        trt, cudart = fakes
        runner = TensorRTRunner(tmp_path, engine_entry(tmp_path, DECODER), DECODER, trt=trt, cudart=cudart)
        runner.run(feeds_for(DECODER, 2))
        created = sorted(cudart.events)
        runner.close()
        runner.close()
        assert sorted(int(c[1]) for c in cudart.calls if c[0] == "cudaEventDestroy") == created
        assert cudart.events == {}

    def test_every_run_records_the_four_events_in_order_on_the_runners_stream(self, runner, fakes, graph):
        _, cudart = fakes
        (stream,) = cudart.streams
        events = sorted(cudart.events)   # handles grow: creation order
        for n in (2, 5, 2):
            runner.run(feeds_for(graph, n))
        assert event_records(cudart) == [(event, stream) for event in events] * 3

    def test_the_events_bracket_copy_in_execution_and_copy_out(self, runner, fakes, graph):
        _, cudart = fakes
        runner.run(feeds_for(graph, 3))
        to_device = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        steps = [("record" if c[0] == "cudaEventRecord" else "in" if c[4] == to_device else "out")
                 for c in cudart.calls if c[0] in ("cudaEventRecord", "cudaMemcpyAsync")]
        assert steps == ["record", *["in"] * len(graph.inputs), "record", "record", *["out"] * len(graph.outputs), "record"]

    def test_last_timings_are_the_fake_gpu_times_in_seconds(self, tmp_path, graph):
        gpu_ms = {"copy_in": 0.5, "compute": 3.0, "copy_out": 0.0625}
        cudart = make_fake_cudart(gpu_ms=gpu_ms)
        trt = make_fake_trt(cudart=cudart, compute=reference)
        with TensorRTRunner(tmp_path, engine_entry(tmp_path, graph), graph, trt=trt, cudart=cudart) as runner:
            for n in (1, MAX_BATCH):
                runner.run(feeds_for(graph, n))
                assert runner.last_timings == pytest.approx(expected_timings(graph, gpu_ms))

    def test_elapsed_times_are_read_after_the_stream_is_synchronized(self, runner, fakes, graph):
        _, cudart = fakes
        runner.run(feeds_for(graph, 2))
        names = [c[0] for c in cudart.calls]
        last_sync = len(names) - 1 - names[::-1].index("cudaStreamSynchronize")
        reads = [i for i, name in enumerate(names) if name == "cudaEventElapsedTime"]
        assert len(reads) == 3 and min(reads) > last_sync

    def test_no_timings_before_a_run_or_after_a_failed_one(self, tmp_path):
        cudart = make_fake_cudart(failures={"cudaStreamSynchronize": 2})
        trt = make_fake_trt(cudart=cudart, compute=reference)
        with TensorRTRunner(tmp_path, engine_entry(tmp_path, DECODER), DECODER, trt=trt, cudart=cudart) as runner:
            assert runner.last_timings is None
            runner.run(feeds_for(DECODER, 2))
            assert runner.last_timings is not None
            with pytest.raises(BackendUnavailableError, match="cudaStreamSynchronize failed"):
                runner.run(feeds_for(DECODER, 2))
            assert runner.last_timings is None


@pytest.fixture
def graphed(tmp_path, fakes, graph):
    """A runner with cuda_graphs=True on the default fakes."""
    trt, cudart = fakes
    with TensorRTRunner(tmp_path, engine_entry(tmp_path, graph), graph, cuda_graphs=True, trt=trt, cudart=cudart) as runner:
        yield runner


def executions(trt) -> int:
    return sum(1 for call in context(trt).calls if call[0] == "execute_async_v3")


def launches(cudart) -> list[int]:
    """The executable graph of each cudaGraphLaunch, in order."""
    return [int(c[1]) for c in cudart.calls if c[0] == "cudaGraphLaunch"]


def assert_outputs(graph: GraphEntry, feeds: dict, outputs: list) -> None:
    for spec, output in zip(graph.outputs, outputs):
        np.testing.assert_array_equal(output, reference(feeds)[spec.name], err_msg=spec.name)


class TestCudaGraphs:
    def test_the_first_run_at_a_batch_executes_then_captures(self, graphed, fakes, graph):
        trt, cudart = fakes
        feeds = feeds_for(graph, 3)
        assert_outputs(graph, feeds, graphed.run(feeds))
        (stream,) = cudart.streams
        names = [c[0] for c in cudart.calls]
        assert executions(trt) == 2                     # the warm-up, then the captured one
        (capture,) = [c for c in cudart.calls if c[0] == "cudaStreamBeginCapture"]
        assert int(capture[1]) == stream and capture[2] == cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
        assert names.index("cudaStreamSynchronize") < names.index("cudaStreamBeginCapture")
        assert names.index("cudaStreamBeginCapture") < names.index("cudaStreamEndCapture") \
            < names.index("cudaGraphInstantiateWithFlags")
        assert launches(cudart) == [] and len(cudart.graph_execs) == 1 and cudart.captures == {}
        assert graphed.graph_fallbacks == {}

    def test_later_runs_at_that_batch_launch_the_graph_instead_of_executing(self, graphed, fakes, graph):
        trt, cudart = fakes
        graphed.run(feeds_for(graph, 3))
        shapes_set = [c for c in context(trt).calls if c[0] == "set_input_shape"]
        for seed in (1, 2):
            feeds = feeds_for(graph, 3, seed=seed)
            assert_outputs(graph, feeds, graphed.run(feeds))   # fresh inputs reach the replayed engine
        (instance,) = cudart.graph_execs
        assert executions(trt) == 2 and launches(cudart) == [instance, instance]
        assert [c for c in context(trt).calls if c[0] == "set_input_shape"] == shapes_set
        assert [int(c[2]) for c in cudart.calls if c[0] == "cudaGraphLaunch"] == [int(graphed._stream)] * 2

    def test_outputs_equal_the_plain_runners_over_several_batches(self, tmp_path, graph):
        runs = [(1, 0), (1, 1), (5, 2), (5, 3), (5, 4), (MAX_BATCH, 5), (1, 6), (MAX_BATCH, 7), (MAX_BATCH, 8)]
        got = {}
        for cuda_graphs in (False, True):
            cudart = make_fake_cudart()
            trt = make_fake_trt(cudart=cudart, compute=reference)
            bundle = tmp_path / str(cuda_graphs)
            with TensorRTRunner(bundle, engine_entry(bundle, graph), graph, cuda_graphs=cuda_graphs,
                                trt=trt, cudart=cudart) as runner:
                got[cuda_graphs] = [runner.run(feeds_for(graph, n, seed)) for n, seed in runs]
            assert (launches(cudart) != []) == cuda_graphs
        for (n, seed), plain, replayed in zip(runs, got[False], got[True]):
            for a, b in zip(plain, replayed):
                np.testing.assert_array_equal(a, b, err_msg=f"batch {n} seed {seed}")

    def test_each_batch_size_gets_its_own_graph(self, graphed, fakes, graph):
        _, cudart = fakes
        for n in (2, 2, 4, 4):
            graphed.run(feeds_for(graph, n))
        assert cudart.count("cudaStreamBeginCapture") == 2 and len(cudart.graph_execs) == 2
        first, second = sorted(cudart.graph_execs)
        assert launches(cudart) == [first, second]

    def test_coming_back_to_a_batch_executes_once_then_replays_its_graph(self, graphed, fakes, graph):
        trt, cudart = fakes
        for n in (2, 2, 4):
            graphed.run(feeds_for(graph, n))
        before = executions(trt), len(launches(cudart))
        feeds = feeds_for(graph, 2, seed=9)
        assert_outputs(graph, feeds, graphed.run(feeds))   # the context ran batch 4 since: execute first
        assert (executions(trt), len(launches(cudart))) == (before[0] + 1, before[1])
        assert_outputs(graph, feeds, graphed.run(feeds))
        assert (executions(trt), len(launches(cudart))) == (before[0] + 1, before[1] + 1)
        assert cudart.count("cudaStreamBeginCapture") == 2   # the kept graph, not a new one

    def test_graph_runs_report_the_same_gpu_timings(self, graphed, graph):
        for _ in range(3):
            graphed.run(feeds_for(graph, 2))
            assert graphed.last_timings == pytest.approx(expected_timings(graph))

    def test_close_destroys_every_graph_and_exec_once(self, tmp_path, fakes):
        trt, cudart = fakes
        runner = TensorRTRunner(tmp_path, engine_entry(tmp_path, DECODER), DECODER, cuda_graphs=True, trt=trt, cudart=cudart)
        for n in (1, 3, 3):
            runner.run(feeds_for(DECODER, n))
        graphs, instances = sorted(cudart.graphs), sorted(cudart.graph_execs)
        runner.close()
        runner.close()
        names = [c[0] for c in cudart.calls]
        assert sorted(int(c[1]) for c in cudart.calls if c[0] == "cudaGraphExecDestroy") == instances
        assert sorted(int(c[1]) for c in cudart.calls if c[0] == "cudaGraphDestroy") == graphs
        assert len(instances) == 2 and cudart.graphs == {} and cudart.graph_execs == {}
        assert max(i for i, name in enumerate(names) if name.startswith("cudaGraph") and name.endswith("Destroy")) \
            < names.index("cudaFree")   # before the buffers the graphs point at

    def test_without_cuda_graphs_nothing_is_captured(self, runner, fakes, graph):
        trt, cudart = fakes
        for _ in range(3):
            runner.run(feeds_for(graph, 2))
        assert executions(trt) == 3 and cudart.count("cudaStreamBeginCapture") == 0 and launches(cudart) == []


class TestCudaGraphFallback:
    def test_an_invalidated_capture_falls_back_to_execute_with_its_reason(self, tmp_path, graph):
        cudart = make_fake_cudart(capture_error="cudaErrorStreamCaptureInvalidated")
        trt = make_fake_trt(cudart=cudart, compute=reference)
        with TensorRTRunner(tmp_path, engine_entry(tmp_path, graph), graph, cuda_graphs=True,
                            trt=trt, cudart=cudart) as runner:
            for seed in range(3):
                feeds = feeds_for(graph, 4, seed=seed)
                assert_outputs(graph, feeds, runner.run(feeds))
            assert list(runner.graph_fallbacks) == [4]
            assert "cudaStreamEndCapture failed with cudaErrorStreamCaptureInvalidated" in runner.graph_fallbacks[4]
            assert cudart.count("cudaStreamBeginCapture") == 1     # tried once per batch size
            assert executions(trt) == 4 and launches(cudart) == []  # 3 runs and the failed capture
            assert cudart.captures == {} and cudart.graphs == {}   # the stream is not left capturing
            assert runner.last_timings == pytest.approx(expected_timings(graph))

    @pytest.mark.parametrize("call", ["cudaStreamBeginCapture", "cudaGraphInstantiateWithFlags"])
    def test_a_failed_capture_call_is_the_reason_and_the_next_batch_still_gets_a_graph(self, tmp_path, call):
        cudart = make_fake_cudart(failures={call: 1})
        trt = make_fake_trt(cudart=cudart, compute=reference)
        with TensorRTRunner(tmp_path, engine_entry(tmp_path, DECODER), DECODER, cuda_graphs=True,
                            trt=trt, cudart=cudart) as runner:
            for n in (2, 2, 3, 3):
                feeds = feeds_for(DECODER, n, seed=n)
                assert_outputs(DECODER, feeds, runner.run(feeds))
            assert list(runner.graph_fallbacks) == [2] and f"{call} failed with" in runner.graph_fallbacks[2]
            (instance,) = cudart.graph_execs
            assert launches(cudart) == [instance]                  # batch 3 only
            assert len(cudart.graphs) == 1 and cudart.captures == {}   # a graph that failed to instantiate is gone

    def test_execute_refused_while_capturing(self, tmp_path, fakes, monkeypatch):
        trt, cudart = fakes
        with TensorRTRunner(tmp_path, engine_entry(tmp_path, DECODER), DECODER, cuda_graphs=True,
                            trt=trt, cudart=cudart) as runner:
            execute = context(trt).execute_async_v3
            monkeypatch.setattr(context(trt), "execute_async_v3",
                                lambda handle: False if handle in cudart.captures else execute(handle))
            feeds = feeds_for(DECODER, 2)
            for _ in range(2):
                assert_outputs(DECODER, feeds, runner.run(feeds))
            assert "execute_async_v3 returned False while capturing" in runner.graph_fallbacks[2]
            assert cudart.captures == {} and cudart.graphs == {} and launches(cudart) == []


def manifest_with(engines: list[EngineEntry]) -> Manifest:
    model = ModelInfo(kind="vaegan", conditional=True, num_classes=10, data_kind="image", item_shape=(1, SIDE, SIDE),
                      latent_dim=LATENT)
    return Manifest(gvtool_version="test", model=model, pixels=None, source={},
                    graphs={g.key: g for g in (DECODER, ENCODER)}, engines={e.file: e for e in engines})


RTX = ("NVIDIA GeForce RTX 4090", "8.9", "10.3.0")


class TestEngineChoice:
    @pytest.fixture
    def manifest(self, tmp_path):
        return manifest_with([
            engine_entry(tmp_path, DECODER, target=RTX, name="rtx"),
            engine_entry(tmp_path, DECODER, target=ORIN, name="orin"),
            engine_entry(tmp_path, DECODER, target=(*ORIN[:2], "10.4.0"), name="orin-trt10.4"),
            engine_entry(tmp_path, DECODER, target=ORIN, dla_core=0, name="orin-dla0"),
            engine_entry(tmp_path, ENCODER, target=RTX, name="encoder-rtx"),
        ])

    def test_engine_for_picks_the_exact_match(self, manifest):
        assert engine_for(manifest, "decoder.fp16", *ORIN).file == "engines/orin.engine"
        assert engine_for(manifest, "decoder.fp16", *RTX).file == "engines/rtx.engine"
        assert engine_for(manifest, "decoder.fp16", *ORIN, dla_core=0).file == "engines/orin-dla0.engine"
        assert engine_for(manifest, "encoder.fp32", *RTX).file == "engines/encoder-rtx.engine"

    @pytest.mark.parametrize("key, target", [
        ("encoder.fp32", ORIN), ("decoder.fp32", ORIN),
        ("decoder.fp16", ("NVIDIA Jetson Orin Nano", "8.7", "10.3.1")),
        ("decoder.fp16", ("NVIDIA Jetson AGX Orin", "8.7", "10.3.0"))])
    def test_engine_for_is_none_without_an_exact_match(self, manifest, key, target):
        assert engine_for(manifest, key, *target) is None

    def test_mismatch_names_what_it_was_built_for_and_this_machine(self):
        manifest = manifest_with([_entry(RTX)])
        assert engine_mismatch(manifest, "decoder.fp16", *ORIN) == (
            "decoder.fp16 engines were built for NVIDIA GeForce RTX 4090 (sm 8.9) with TensorRT 10.3.0; "
            "this is NVIDIA Jetson Orin Nano (sm 8.7) with TensorRT 10.3.0: "
            "rebuild them here with `gvtool export BUNDLE --trt`")

    def test_mismatch_lists_every_target_once(self, manifest):
        message = engine_mismatch(manifest, "decoder.fp16", "NVIDIA Jetson AGX Orin", "8.7", "10.3.0")
        assert message.count("NVIDIA GeForce RTX 4090 (sm 8.9) with TensorRT 10.3.0") == 1
        assert "NVIDIA Jetson Orin Nano (sm 8.7, DLA core 0) with TensorRT 10.3.0" in message
        assert message.endswith("this is NVIDIA Jetson AGX Orin (sm 8.7) with TensorRT 10.3.0: "
                                "rebuild them here with `gvtool export BUNDLE --trt`")

    def test_mismatch_without_any_engine_for_the_graph(self, manifest):
        assert engine_mismatch(manifest, "decoder.fp32", *ORIN) == (
            "no engine built from decoder.fp32: build one here with `gvtool export BUNDLE --trt`")
        assert engine_mismatch(manifest, "decoder.int8", *ORIN).startswith("no engine built from decoder.int8")

    def test_mismatch_for_a_dla_core_asks_for_that_core(self, manifest):
        assert engine_mismatch(manifest, "decoder.fp16", *ORIN, dla_core=1).endswith(
            "this is NVIDIA Jetson Orin Nano (sm 8.7, DLA core 1) with TensorRT 10.3.0: "
            "rebuild them here with `gvtool export BUNDLE --trt --dla-core 1`")

    def test_no_mismatch_when_an_engine_fits(self, manifest):
        assert engine_mismatch(manifest, "decoder.fp16", *ORIN) == ""


def _entry(target) -> EngineEntry:
    gpu_name, capability, version = target
    return EngineEntry(graph_key="decoder.fp16", precision="fp16", file="engines/x.engine", sha256="0" * 64, bytes=1,
                       profile=dict(PROFILE), tensorrt_version=version, gpu_name=gpu_name, compute_capability=capability)


class TestTorchFree:
    def test_imports_without_torch_or_tensorrt(self):
        code = ("import sys; sys.modules['torch'] = None; sys.modules['tensorrt'] = None; "
                "import gvtool.runtime.trt_runner, gvtool.runtime.gpu; "
                "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'cuda', 'tensorrt') "
                "and sys.modules[m]); "
                "print(bad or 'ok')")
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "ok"


@pytest.mark.tensorrt
class TestRealTensorRT:
    """Builds tiny engines from real ONNX graphs and runs them against onnxruntime on the CPU; runs
    only where tensorrt, cuda-python, onnx, onnxruntime and an NVIDIA GPU are present."""

    @pytest.fixture
    def real(self):
        pytest.importorskip("tensorrt", reason="TensorRT is not installed here (pip install 'gvtool[trt]', or JetPack)")
        pytest.importorskip("onnx", reason="the real-TensorRT test writes real ONNX graphs (pip install 'gvtool[export]')")
        pytest.importorskip("onnxruntime",
                            reason="the real-TensorRT test compares with onnxruntime (pip install 'gvtool[cpu]')")
        try:
            tensorrt_environment(0)
        except (BackendUnavailableError, BadInputError) as error:
            pytest.skip(f"no usable NVIDIA GPU: {error}")

    def test_engines_agree_with_onnxruntime(self, real, tmp_path):
        import onnxruntime

        from gvtool.export.trt_build import build_engines
        from test_trt_build import make_bundle

        bundle = make_bundle(tmp_path / "bundle", precisions=("fp32",))
        manifest = build_engines(bundle, min_batch=1, opt_batch=2, max_batch=4, workspace_mb=256)
        _, _, gpu_name, capability, version = tensorrt_environment(0)
        rng = np.random.default_rng(0)
        for key, graph in manifest.graphs.items():
            engine = engine_for(manifest, key, gpu_name, capability, version)
            assert engine is not None, engine_mismatch(manifest, key, gpu_name, capability, version)
            session = onnxruntime.InferenceSession(str(bundle / graph.file), providers=["CPUExecutionProvider"])
            with TensorRTRunner(bundle, engine, graph) as runner:
                assert runner.max_batch == 4
                for n in (1, 3, 4):
                    feeds = {t.name: (rng.integers(0, 3, size=(n, *t.shape[1:])) if t.dtype == "int64" else
                                      rng.normal(size=(n, *t.shape[1:]))).astype(t.dtype) for t in graph.inputs}
                    got = runner.run(feeds)
                    want = session.run([t.name for t in graph.outputs], feeds)
                    for spec, a, b in zip(graph.outputs, got, want):
                        assert a.shape == b.shape, spec.name
                        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3, err_msg=f"{key} {spec.name} batch {n}")

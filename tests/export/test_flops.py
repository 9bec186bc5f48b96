"""FLOPs per item: hand-counted one-node graphs, the default MNIST encoder and decoder, and the manifest field.

The one-node graphs are built with onnx.helper (no torch). The default networks are exported with
export_onnx and compared with a count written out from their architecture. The bundle tests use the
shared tiny bundles of export_fixtures.py.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export_fixtures import ALL_PRECISIONS, tiny_bundle, tiny_run  # noqa: F401
from gvtool.export.flops import flops_per_item
from gvtool.manifest import MANIFEST_FILE, GraphEntry, Manifest, read_manifest
from test_manifest import make_manifest

F = TensorProto.FLOAT


def _weight(name: str, shape) -> onnx.TensorProto:
    return numpy_helper.from_array(np.zeros(shape, dtype=np.float32), name)


def _model(nodes, inputs, outputs, initializers=(), opset: int = 17) -> onnx.ModelProto:
    """A checked model; inputs/outputs are (name, shape) pairs of float tensors, "batch" for a dynamic axis."""
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, F, s) for n, s in outputs], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


# --- one node, counted by hand -------------------------------------------------------------------------

class TestConvolutions:
    def test_conv_counts_its_multiply_adds_and_bias(self):
        # (1, 1, 28, 28) -> 32 channels, 4x4 kernel, stride 2, pad 1 -> (1, 32, 14, 14)
        conv = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[4, 4], strides=[2, 2], pads=[1, 1, 1, 1])
        model = _model([conv], [("x", [1, 1, 28, 28])], [("y", [1, 32, 14, 14])],
                       [_weight("w", (32, 1, 4, 4)), _weight("b", (32,))])
        assert flops_per_item(model) == 2 * 32 * 14 * 14 * 1 * 16 + 32 * 14 * 14

    def test_conv_without_bias_counts_only_multiply_adds(self):
        conv = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        model = _model([conv], [("x", [1, 8, 10, 10])], [("y", [1, 4, 10, 10])], [_weight("w", (4, 8, 3, 3))])
        assert flops_per_item(model) == 2 * 4 * 10 * 10 * 8 * 9

    def test_grouped_conv_counts_input_channels_per_group(self):
        # 16 -> 32 channels in 4 groups: each output sees 16 / 4 = 4 input channels; 3x3, pad 1 keeps 8x8
        conv = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=4)
        model = _model([conv], [("x", [1, 16, 8, 8])], [("y", [1, 32, 8, 8])],
                       [_weight("w", (32, 4, 3, 3)), _weight("b", (32,))])
        assert flops_per_item(model) == 2 * 32 * 8 * 8 * 4 * 9 + 32 * 8 * 8

    def test_conv_transpose_counts_per_input_element(self):
        # (1, 8, 7, 7) -> 4 channels, 4x4 kernel, stride 2, pad 1 -> (1, 4, 14, 14); weight (C_in, C_out, kH, kW)
        deconv = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], kernel_shape=[4, 4], strides=[2, 2],
                                  pads=[1, 1, 1, 1])
        model = _model([deconv], [("x", [1, 8, 7, 7])], [("y", [1, 4, 14, 14])],
                       [_weight("w", (8, 4, 4, 4)), _weight("b", (4,))])
        assert flops_per_item(model) == 2 * (8 * 7 * 7) * 4 * 16 + 4 * 14 * 14


class TestMatrixProducts:
    def test_gemm_with_trans_b_and_bias(self):
        # (1, 100) @ (30, 100)^T + (30,) -> (1, 30): M=1, K=100, N=30
        gemm = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
        model = _model([gemm], [("x", [1, 100])], [("y", [1, 30])], [_weight("w", (30, 100)), _weight("b", (30,))])
        assert flops_per_item(model) == 2 * 1 * 30 * 100 + 30

    def test_gemm_with_trans_a_and_no_bias(self):
        # (100, 1)^T @ (100, 30) -> (1, 30)
        gemm = helper.make_node("Gemm", ["x", "w"], ["y"], transA=1)
        model = _model([gemm], [("x", [100, 1])], [("y", [1, 30])], [_weight("w", (100, 30))])
        assert flops_per_item(model) == 2 * 1 * 30 * 100

    def test_batched_matmul_counts_every_matrix_of_the_stack(self):
        # (1, 3, 5, 7) @ (7, 2) broadcast -> (1, 3, 5, 2): 3 matrices of M=5, K=7, N=2
        matmul = helper.make_node("MatMul", ["x", "w"], ["y"])
        model = _model([matmul], [("x", [1, 3, 5, 7])], [("y", [1, 3, 5, 2])], [_weight("w", (7, 2))])
        assert flops_per_item(model) == 3 * 2 * 5 * 2 * 7


class TestElementwiseAndDataMovement:
    def test_elementwise_chain_counts_one_per_output_element(self):
        # (1, 4, 6) through Relu, Mul (broadcast scalar), Add, Sigmoid, Tanh, LeakyRelu, Sub, Div: 8 ops x 24 elements
        ops = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Mul", ["a", "s"], ["b"]),
               helper.make_node("Add", ["b", "x"], ["c"]), helper.make_node("Sigmoid", ["c"], ["d"]),
               helper.make_node("Tanh", ["d"], ["e"]), helper.make_node("LeakyRelu", ["e"], ["f"], alpha=0.2),
               helper.make_node("Sub", ["f", "s"], ["g"]), helper.make_node("Div", ["g", "s"], ["y"])]
        model = _model(ops, [("x", [1, 4, 6])], [("y", [1, 4, 6])], [_weight("s", ())])
        assert flops_per_item(model) == 8 * 24

    def test_unfolded_batch_norm_counts_a_scale_and_a_shift(self):
        bn = helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"])
        params = [_weight(n, (3,)) for n in "gbmv"]
        model = _model([bn], [("x", [1, 3, 5, 5])], [("y", [1, 3, 5, 5])], params)
        assert flops_per_item(model) == 2 * 3 * 5 * 5

    def test_resize_is_data_movement(self):
        scales = numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales")
        resize = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")
        model = _model([resize], [("x", [1, 4, 7, 7])], [("y", [1, 4, 14, 14])], [scales])
        assert flops_per_item(model) == 0

    def test_integer_shape_arithmetic_is_not_counted(self):
        # Shape -> Gather -> Add, as the tracer writes for x.chunk(2): int64 bookkeeping, not the model's work
        nodes = [helper.make_node("Shape", ["x"], ["shape"]),
                 helper.make_node("Gather", ["shape", "axis"], ["dim"], axis=0),
                 helper.make_node("Add", ["dim", "one"], ["dim1"]),
                 helper.make_node("Relu", ["x"], ["y"])]
        inits = [numpy_helper.from_array(np.array(1, dtype=np.int64), n) for n in ("axis", "one")]
        model = _model(nodes, [("x", [1, 10])], [("y", [1, 10])], inits)
        assert flops_per_item(model) == 10


class TestBatchAxis:
    def _dynamic_conv(self):
        conv = helper.make_node("Conv", ["x", "w", "b"], ["h"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="c1")
        flatten = helper.make_node("Flatten", ["h"], ["f"])
        gemm = helper.make_node("Gemm", ["f", "fc", "fb"], ["y"], transB=1)
        return _model([conv, flatten, gemm],
                      [("x", ["batch", 2, 6, 6])], [("y", ["batch", 5])],
                      [_weight("w", (4, 2, 3, 3)), _weight("b", (4,)), _weight("fc", (5, 144)), _weight("fb", (5,))])

    @pytest.mark.parametrize("batch", [1, 8])
    def test_count_per_item_does_not_depend_on_the_batch(self, batch):
        per_item = (2 * 4 * 36 * 2 * 9 + 4 * 36) + (2 * 5 * 144 + 5)  # conv 2->4 at 6x6, then Gemm 144 -> 5
        assert flops_per_item(self._dynamic_conv(), batch=batch) == per_item

    def test_leaves_the_callers_model_unchanged(self):
        model = self._dynamic_conv()
        before = model.SerializeToString()
        flops_per_item(model, batch=8)
        assert model.SerializeToString() == before

    def test_a_shape_still_unknown_names_the_node(self):
        # the spatial size is symbolic too: the conv's output cannot be sized
        conv = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], name="stem")
        model = _model([conv], [("x", ["batch", 1, "H", "W"])], [("y", ["batch", 2, "H2", "W2"])],
                       [_weight("w", (2, 1, 3, 3))])
        with pytest.raises(ValueError, match=r"node stem \(Conv\).*unknown"):
            flops_per_item(model)

    @pytest.mark.parametrize("batch", [0, -1, 2.0, True])
    def test_refuses_a_batch_that_is_not_a_positive_integer(self, batch):
        with pytest.raises(ValueError, match="batch must be an integer >= 1"):
            flops_per_item(self._dynamic_conv(), batch=batch)


# --- the default MNIST networks, exported --------------------------------------------------------------

@pytest.fixture(scope="module")
def default_graphs(tmp_path_factory, one_torch_thread):
    """The default ModelConfig (MNIST 1x28x28, latent 16, width 32) exported to ONNX: {graph: model}."""
    from gvtool.export.contract import contract
    from gvtool.export.onnx_export import export_onnx
    from gvtool.train.config import ModelConfig
    from gvtool.train.graphs import graph_modules
    from gvtool.train.models import build_networks

    cfg = ModelConfig()
    folder = tmp_path_factory.mktemp("default-graphs")
    return {graph: export_onnx(module, *contract(module), folder / f"{graph}.onnx")
            for graph, module in graph_modules(cfg, build_networks(cfg)).items()}


def _ops(model: onnx.ModelProto) -> list[str]:
    """The op types that carry arithmetic, in order (shape bookkeeping and data movement left out)."""
    return [n.op_type for n in model.graph.node
            if n.op_type in ("Conv", "Gemm", "MatMul", "BatchNormalization", "Relu", "LeakyRelu", "Tanh")]


class TestDefaultMnistNetworks:
    def test_encoder_matches_the_architecture(self, default_graphs):
        model = default_graphs["encoder"]
        # torch folds the second conv's BatchNorm2d into that conv (which gains a bias); no BN node is left
        assert _ops(model) == ["Conv", "LeakyRelu", "Conv", "LeakyRelu", "Conv", "LeakyRelu", "Gemm"]
        conv1 = 2 * (32 * 14 * 14) * (1 * 4 * 4) + 32 * 14 * 14     # 1x28x28 -> 32x14x14, 4x4 s2, bias
        act1 = 32 * 14 * 14                                          # LeakyReLU
        conv2 = 2 * (64 * 7 * 7) * (32 * 4 * 4) + 64 * 7 * 7        # 32x14x14 -> 64x7x7, BN folded -> bias
        act2 = 64 * 7 * 7                                            # LeakyReLU
        extra = 2 * (64 * 7 * 7) * (64 * 3 * 3) + 64 * 7 * 7        # extra_convs: 64x7x7 -> 64x7x7, BN folded
        act3 = 64 * 7 * 7
        head = 2 * (64 * 7 * 7) * (2 * 16) + 2 * 16                  # Linear 3136 -> 32 (mean, logvar), bias
        # chunk(2) exports as Shape/Gather/Add/Div/Mul on int64 and two Slices: 0
        assert flops_per_item(model) == conv1 + act1 + conv2 + act2 + extra + act3 + head == 7250464

    def test_decoder_matches_the_architecture(self, default_graphs):
        model = default_graphs["decoder"]
        # the BatchNorm1d after the bias-free Linear is not folded (torch folds only into convs): it stays
        # a BatchNormalization node; the BatchNorm2d after the first 3x3 conv is folded into it
        assert _ops(model) == ["MatMul", "BatchNormalization", "Relu", "Conv", "Relu", "Conv", "Relu", "Conv", "Tanh"]
        project = 2 * 16 * (64 * 7 * 7)                              # Linear 16 -> 3136, no bias
        bn = 2 * (64 * 7 * 7)                                        # BatchNorm1d: scale and shift
        relu0 = 64 * 7 * 7
        # Reshape to 64x7x7: 0
        extra = 2 * (64 * 7 * 7) * (64 * 3 * 3) + 64 * 7 * 7        # extra_convs: 64x7x7 -> 64x7x7, BN folded
        relu_extra = 64 * 7 * 7
        # nearest x2 Resize to 14x14: 0
        conv1 = 2 * (32 * 14 * 14) * (64 * 3 * 3) + 32 * 14 * 14   # 64x14x14 -> 32x14x14, BN folded -> bias
        relu1 = 32 * 14 * 14
        # Resize to 28x28: 0
        conv2 = 2 * (1 * 28 * 28) * (32 * 3 * 3) + 1 * 28 * 28      # 32x28x28 -> 1x28x28, bias
        tanh = 1 * 28 * 28
        assert (flops_per_item(model) == project + bn + relu0 + extra + relu_extra + conv1 + relu1 + conv2 + tanh
                == 11419744)

    @pytest.mark.parametrize("graph", ["encoder", "decoder"])
    def test_same_count_at_batch_1_and_8(self, default_graphs, graph):
        assert flops_per_item(default_graphs[graph], batch=8) == flops_per_item(default_graphs[graph], batch=1)


# --- the manifest field ---------------------------------------------------------------------------------

class TestManifestField:
    def test_round_trips_through_json(self):
        manifest = make_manifest()
        entry = dataclasses.replace(manifest.graphs["encoder.fp32"], flops_per_item=3_631_520)
        again = GraphEntry.from_dict(json.loads(json.dumps(entry.to_dict())))
        assert again == entry and again.flops_per_item == 3_631_520

    def test_an_older_manifest_without_the_key_loads_with_none(self, tmp_path):
        raw = make_manifest().to_dict()
        for graph in raw["graphs"].values():
            graph.pop("flops_per_item", None)
        assert all("flops_per_item" not in g for g in raw["graphs"].values())
        loaded = Manifest.from_dict(raw)
        assert [g.flops_per_item for g in loaded.graphs.values()] == [None, None]
        (tmp_path / MANIFEST_FILE).write_text(json.dumps(raw))
        assert all(g.flops_per_item is None for g in read_manifest(tmp_path).graphs.values())

    @pytest.mark.usefixtures("one_torch_thread")
    @pytest.mark.parametrize("name", ["vaegan", "conditional", "gan", "ring8"])
    def test_export_records_one_count_per_graph_on_every_precision(self, tiny_bundle, name):
        out, manifest, _ = tiny_bundle(name)
        on_disk = read_manifest(out)
        for graph in {entry.graph for entry in on_disk.graphs.values()}:
            counts = {on_disk.graph(graph, p).flops_per_item for p in ALL_PRECISIONS}
            assert len(counts) == 1 and isinstance(next(iter(counts)), int) and next(iter(counts)) > 0
            assert on_disk.graph(graph, "fp32").flops_per_item == flops_per_item(onnx.load(out / f"{graph}.onnx"))
        assert on_disk.graphs == manifest.graphs

    @pytest.mark.usefixtures("one_torch_thread")
    def test_an_uncountable_graph_is_exported_with_none_and_a_log_line(self, tiny_run, tmp_path, monkeypatch):
        from gvtool.export import bundle

        def refuse(model, batch=1):
            raise ValueError("node #0 (Conv): the shape of 'x' is unknown after shape inference")

        monkeypatch.setattr(bundle, "flops_per_item", refuse)
        lines: list[str] = []
        out, manifest = bundle.export_bundle(tiny_run("ring8"), tmp_path / "b", precisions=("fp32",), log=lines.append)
        assert [g.flops_per_item for g in read_manifest(out).graphs.values()] == [None, None]
        assert sum("FLOPs per item not counted" in line and "node #0 (Conv)" in line for line in lines) == 2


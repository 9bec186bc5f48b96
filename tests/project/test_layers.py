"""The layering of DESIGN.md: imports only go downward, and the torch-free parts stay torch-free."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCK_TORCH = "import sys; sys.modules['torch'] = None; sys.modules['tensorrt'] = None; "


def _imports(folder: str) -> set[str]:
    """Every module name imported anywhere in gvtool/<folder> (top level or inside functions)."""
    names = set()
    for path in (ROOT / "gvtool" / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
    return names


def _run(code: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


class TestImportDirections:
    def test_train_imports_neither_export_nor_runtime(self):
        bad = {n for n in _imports("train") if n.startswith(("gvtool.export", "gvtool.runtime"))}
        assert not bad

    def test_eval_loads_runs_through_train_not_export(self):
        assert not {n for n in _imports("eval") if n.startswith("gvtool.export")}

    def test_runtime_imports_no_torch_train_or_export(self):
        bad = {n for n in _imports("runtime") if n.split(".")[0] == "torch" or n.startswith(("gvtool.train", "gvtool.export"))}
        assert not bad

    def test_the_bench_core_imports_no_torch_train_or_export(self):
        """Only torch_baseline.py (imported when its case runs) may: a device without torch benchmarks its bundles."""
        for name in ("core", "cases", "report", "command"):
            tree = ast.parse((ROOT / "gvtool" / "bench" / f"{name}.py").read_text())
            top = {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
            top |= {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
            assert not {m for m in top if m.split(".")[0] == "torch" or m.startswith(("gvtool.train", "gvtool.export"))}, name

    def test_shared_modules_import_no_layer(self):
        for name in ("errors", "fileio", "manifest", "imaging", "system", "prompts", "masks"):
            tree = ast.parse((ROOT / "gvtool" / f"{name}.py").read_text())
            modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
            modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            assert not {m for m in modules if m.startswith(("gvtool.train", "gvtool.export", "gvtool.runtime", "torch"))}, name


class TestTorchFree:
    """Run in a subprocess where `import torch` fails, as on a Jetson with only the runtime installed."""

    def test_cli_shared_modules_and_trt_builder_import_without_torch(self):
        result = _run("import gvtool.cli, gvtool.manifest, gvtool.imaging, gvtool.export.trt_build; print('ok')")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "ok"

    def test_export_bundle_trt_without_torch_asks_for_tensorrt_not_torch(self, tmp_path):
        from gvtool.manifest import GraphEntry, Manifest, TensorSpec, Validation, sha256_file, write_manifest

        onnx_file = tmp_path / "decoder.onnx"
        onnx_file.write_bytes(b"not parsed before tensorrt is found")
        entry = GraphEntry(graph="decoder", precision="fp32", file="decoder.onnx", sha256=sha256_file(onnx_file),
                           bytes=onnx_file.stat().st_size, opset=17, ir_version=8,
                           inputs=(TensorSpec("latents", "float32", ("batch", 4)),),
                           outputs=(TensorSpec("images", "float32", ("batch", 1, 16, 16)),),
                           validation=Validation(0.0, 0.0, "max_abs", 1e-4, True, (1, 16)))
        model = {"kind": "gan", "conditional": False, "num_classes": 0, "data_kind": "image", "item_shape": [1, 16, 16],
                 "latent_dim": 4}
        write_manifest(tmp_path, Manifest(gvtool_version="test", model=model, pixels={"scale": 127.5, "offset": -1.0},
                                          source={}, graphs={entry.key: entry}))
        result = _run("from gvtool.cli import main; main()", "export", str(tmp_path), "--trt")
        assert result.returncode == 1, result.stderr
        assert "tensorrt" in result.stderr.lower() and "Traceback" not in result.stderr
        assert "torch" not in result.stderr.lower().replace("tensorrt", "")

    @pytest.mark.parametrize("command", ["--help", "info --help", "export --help"])
    def test_cli_help_runs_without_torch(self, command):
        result = _run("from gvtool.cli import main; main()", *command.split())
        assert result.returncode == 0, result.stderr

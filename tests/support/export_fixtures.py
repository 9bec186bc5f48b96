"""Tiny trained runs and their bundles, shared by test_export.py and test_cli_export.py.

Each run trains for 1 epoch at width 4 / latent 4 / batch 8 (a few seconds on 2 cores) and is
exported once. The work is cached here, at module level, because a fixture imported into two test
modules is two fixtures to pytest: without the cache each module would train its own copies.
Tests read these folders and never change them; a test that needs to change one copies it first.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

RUNS = {
    # name: (data fixture, model kind, conditional); a prior's "data" is the run it learns the codes of
    "vaegan": ("unlabelled_npz", "vaegan", False),
    "conditional": ("labelled_npz", "vaegan", True),
    "gan": ("unlabelled_npz", "gan", False),
    "ring8": ("ring8", "vaegan", False),
    "ali": ("labelled_npz", "ali", True),
    "prior": ("vaegan", "prior", False),
    "prior-conditional": ("conditional", "prior", True),
    "hier": ("unlabelled_npz", "hier", False),
    "hier-conditional": ("labelled_npz", "hier", True),
    "hier-ring8": ("ring8", "hier", False),
    "cyclevae": ("labelled_npz", "cyclevae", False),  # domain B: colour_npz (RGB, another size)
    "cyclevae-style": ("labelled_npz", "cyclevae", False),  # with a style code per domain (MODEL_CHANGES)
    "mvae": ("labelled_npz", "mvae", True),  # a joint model of images and labels
}
MODEL_CHANGES = {"cyclevae-style": {"style_dim": 2}}  # a run's model settings beside its kind's tiny defaults
ALL_PRECISIONS = ("fp32", "fp16", "int8")
BUNDLE_PRECISIONS = {name: ALL_PRECISIONS for name in RUNS}
IMAGE_RUNS = ("vaegan", "conditional", "gan")

_runs: dict[str, Path] = {}
_bundles: dict[str, tuple] = {}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, labelled_npz, unlabelled_npz, colour_npz, make_train_config, one_torch_thread):
    """tiny_run(name) -> the run folder of RUNS[name], trained once per session."""
    from gvtool.train.loop import train

    def get(name: str) -> Path:
        if name not in _runs:
            data, kind, conditional = RUNS[name]
            data = {"labelled_npz": labelled_npz, "unlabelled_npz": unlabelled_npz}.get(data, data)
            run_dir = tmp_path_factory.mktemp(f"run-{name}") / name
            if kind == "prior":
                from gvtool.train.config import TrainConfig

                base = get(data)
                config = TrainConfig.for_prior(TrainConfig.from_file(base / "config.json"), base)
                config = config.replace(epochs=1, batch_size=8, device="cpu", n_fixed=16,
                                        model=dataclasses.replace(config.model, prior_hidden=16, prior_layers=1))
            else:
                config = make_train_config(data, kind=kind, conditional=conditional,
                                           **({"data_b": colour_npz} if kind == "cyclevae" else {}))
                config = config.replace(model=dataclasses.replace(config.model, **MODEL_CHANGES.get(name, {})))
            train(config, run_dir)
            _runs[name] = run_dir
        return _runs[name]

    return get


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_run):
    """tiny_bundle(name) -> (bundle folder, manifest, exporter's log lines), exported once per session."""
    from gvtool.export.bundle import export_bundle

    def get(name: str):
        if name not in _bundles:
            lines: list[str] = []
            out, manifest = export_bundle(tiny_run(name), tmp_path_factory.mktemp(f"bundle-{name}") / name,
                                          precisions=BUNDLE_PRECISIONS[name], log=lines.append)
            _bundles[name] = out, manifest, lines
        return _bundles[name]

    return get


def copy_run(run_dir: Path, dest: Path, *, without: tuple[str, ...] = ()) -> Path:
    """A copy of a run folder at `dest`, leaving out the named files."""
    shutil.copytree(run_dir, dest, ignore=lambda folder, names: [n for n in names if n in without])
    return dest


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: equal snapshots mean an untouched folder."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    """Temporary folders or files an export may leave beside its bundle (.NAME.xxx.tmp / .old)."""
    return sorted(p.name for p in Path(parent).iterdir()
                  if p.name.startswith(".") and (p.name.endswith(".tmp") or p.name.endswith(".old")))

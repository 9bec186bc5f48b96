"""Finding bundles on disk (stdlib only)."""

from __future__ import annotations

from pathlib import Path

from gvtool.errors import BadBundleError
from gvtool.fileio import newest_holding
from gvtool.manifest import MANIFEST_FILE

BUNDLES_ROOT = Path("bundles")


def newest_bundle(root: Path = BUNDLES_ROOT) -> Path:
    """The complete bundle (one with a manifest) under `root` whose manifest was written last."""
    bundle = newest_holding(root, MANIFEST_FILE)
    if bundle is None:
        raise BadBundleError(f"no bundle under {root}/; export one first with `gvtool export`, or name a bundle folder")
    return bundle

"""Finding bundles on disk (stdlib only)."""

from __future__ import annotations

from pathlib import Path

from gvtool.errors import BadBundleError
from gvtool.manifest import MANIFEST_FILE

BUNDLES_ROOT = Path("bundles")


def newest_bundle(root: Path = BUNDLES_ROOT) -> Path:
    """The complete bundle (one with a manifest) under `root` whose manifest was written last."""
    found = [p for p in root.iterdir() if (p / MANIFEST_FILE).is_file()] if root.is_dir() else []
    if not found:
        raise BadBundleError(f"no bundle under {root}/; export one first with `gvtool export`, or name a bundle folder")
    return max(found, key=lambda p: (p / MANIFEST_FILE).stat().st_mtime)

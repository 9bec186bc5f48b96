"""Files that survive crashes and concurrent writers (stdlib only): atomic writes, which never leave a half-written
file behind; locks, which refuse a second writer of a run or bundle and name the holder; and the clean-up of what
a killed writer left."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator

from gvtool.errors import BadInputError

try:  # POSIX: a lock the kernel releases when its process dies, however it dies
    import fcntl
except ImportError:  # Windows: an exclusive lock file, judged stale when its holder on this host is gone
    fcntl = None


MAX_NESTING = 32  # gvtool's JSON files (manifests, configs, reports) nest at most 6 deep; bounds the parser's recursion


def _deepest(text: str) -> int:
    """How deep the JSON text's brackets nest (strings skipped), without parsing it: json.loads recurses once
    per level and 100,000 nested brackets would exhaust Python's stack."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} overflows a float")
    return value


def load_json_bounded(path: Path, what: str, error=BadInputError, max_bytes: int = 4 << 20) -> object:
    """The JSON of a file written by gvtool, refusing what gvtool never writes: more than max_bytes, brackets
    nested over MAX_NESTING deep, NaN or Infinity, text that is not UTF-8. One clear error each."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{path} is {size:,} bytes, far larger than any {what} gvtool writes (at most {max_bytes:,})")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{path} is not UTF-8 text, so not a {what}") from None
    except OSError as failure:
        raise error(f"{path} cannot be read: {failure.strerror or failure}") from None
    if _deepest(text) > MAX_NESTING:
        raise error(f"{path} nests its brackets over {MAX_NESTING} deep; not a {what}")
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (json.JSONDecodeError, ValueError, RecursionError) as failure:
        raise error(f"{path} is not valid JSON: {failure}") from None


def newest_holding(root: Path, name: str, accept=lambda folder: True) -> Path | None:
    """The folder directly under `root` whose file `name` was modified last (among those `accept` takes); None when
    no folder holds one. Hidden folders (a writer's `.NAME.*.tmp`, a replaced bundle's `.NAME.*.old`) are never
    picked."""
    found = [p for p in root.iterdir() if not p.name.startswith(".") and (p / name).is_file()] if root.is_dir() else []
    return max((p for p in found if accept(p)), key=lambda p: (p / name).stat().st_mtime, default=None)


def lock_path(target: Path) -> Path:
    """The lock of a run or bundle folder: a hidden file beside it, so that the folder itself can be created,
    replaced or removed while the lock is held."""
    return target.parent / f".{target.name}.lock"


def _holder_text(info: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(info.get("since", 0)))
    return f"{info.get('what', 'gvtool')} (pid {info.get('pid', '?')} on {info.get('host', '?')}, since {since})"


def _read_holder(handle_or_path) -> dict:
    try:
        text = handle_or_path.read() if hasattr(handle_or_path, "read") else Path(handle_or_path).read_text()
        info = json.loads(text or "{}")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


@contextlib.contextmanager
def folder_lock(target: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold the lock of folder `target` for `what` (e.g. "gvtool train") while the block runs; raise BadInputError
    naming the holder (its command, pid, host and start) when another process holds it. A holder killed with
    SIGKILL or a power cut blocks nobody: on POSIX the kernel drops its lock (flock) with the process; elsewhere a
    lock whose holder on this host is gone is taken over."""
    target = Path(target)
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"what": what, "pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    if fcntl is not None:
        handle = _flocked(path, target)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(me))
            handle.flush()
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # while still held: a taker that opened the old file sees it gone and retries
            handle.close()
        return
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            holder = _read_holder(path)
            stale = holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) and not _alive(holder["pid"])
            if not stale:
                raise BadInputError(f"{target} is in use by {_holder_text(holder)}; wait for it to finish, or stop "
                                    f"it (a lock left by a crash elsewhere: delete {path})") from None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    else:
        raise BadInputError(f"{target} is in use: its lock {path} keeps coming back")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(me))
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _flocked(path: Path, target: Path):
    """The lock file at `path`, opened and flock-ed. A file unlinked by its releaser between our open and our lock
    is not the lock any more: then open the new one and try again."""
    while True:
        handle = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = _read_holder(handle)
            handle.close()
            raise BadInputError(f"{target} is in use by {_holder_text(holder)}; wait for it to finish, or stop it") from None
        try:
            same = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return handle
        handle.close()


def remove_leftovers(folder: Path, pattern: str) -> list[Path]:
    """Remove what killed writers left in `folder` matching `pattern` (a glob of hidden temp names); call it only
    while holding the lock that every such writer holds, so nothing removed can still be in use. Returns what
    was removed."""
    removed = []
    for path in sorted(Path(folder).glob(pattern)) if Path(folder).is_dir() else []:
        if not path.name.startswith("."):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        removed.append(path)
    return removed


def current_umask() -> int:
    """The process's umask (os.umask can only be read by setting it; it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def give_umask_mode(fd_or_path, folder: bool = False) -> None:
    """Give a file made by mkstemp (always 0600) or a folder made by mkdtemp (0700) the mode a plain open() or
    mkdir() would have given it under the umask: outputs are shared as the user's other files are."""
    mode = (0o777 if folder else 0o666) & ~current_umask()
    if isinstance(fd_or_path, int):
        if hasattr(os, "fchmod"):  # not on Windows before Python 3.13, where modes mean little anyway
            os.fchmod(fd_or_path, mode)
    else:
        os.chmod(fd_or_path, mode)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success fsync it and rename it over `path`.

    On any exception the temporary file is removed and `path` keeps its old content. An OSError that names the
    temporary file or no file at all (a full disk mid-write) is raised naming `path`, the output the user asked for.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "Is a directory (an output file was expected)", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:  # a read-only folder: name the output asked for, not the temporary name
        raise type(error)(error.errno, error.strerror, str(path)) from None
    try:
        give_umask_mode(fd)
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if error.errno is not None and (error.filename in (None, tmp) or error.filename2 == tmp):
            raise type(error)(error.errno, error.strerror, str(path)) from None
        raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)

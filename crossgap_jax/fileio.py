"""Atomic file writes shared by every layer: the one writer of the package.

Every output file is written the same way: a temporary file in the destination's folder,
``fsync``, permissions set to ``0666 & ~umask`` (``0644`` under the usual umask ``022``;
``mkstemp`` alone would leave ``0600``), then ``os.replace`` onto the destination and an
``fsync`` of the folder. A crash, a full disk or a read-only folder therefore never leaves
a partial file behind, and an existing file keeps its old content until the new one is
complete.

A failure raises :class:`OutputWriteError` (an ``OSError``, same ``errno``), whose message
names the destination, the cause in words (read-only file system, permission denied, no
space left, quota) and what to do; the temporary file is removed first.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, Any

import numpy as np

#: errno -> (cause in words, fix) for the failures a user can act on.
_CAUSES = {
    errno.EROFS: ("the file system is read-only", "choose a writable output folder"),
    errno.EACCES: ("permission denied", "choose a folder you can write to or fix its "
                   "permissions"),
    errno.EPERM: ("operation not permitted", "choose a folder you can write to"),
    errno.ENOSPC: ("no space left on the device", "free some space or choose an output "
                   "folder on another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or choose another output folder"),
    errno.EFBIG: ("file too large for this file system", "choose an output folder on "
                  "another file system"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose another output "
                    "path"),
    errno.EISDIR: ("it is a folder", "give a file name (e.g. <folder>/results.json)"),
}


class OutputWriteError(OSError):
    """An output file could not be written; the message names the path and the cause.

    ``errno`` is the underlying error's; nothing partial was left at the path (an existing
    file there is unchanged).
    """

    def __str__(self) -> str:
        return str(self.strerror)


def write_error(path: str, err: OSError) -> OutputWriteError:
    """An :class:`OutputWriteError` for a failed write of ``path`` caused by ``err``."""
    if isinstance(err, OutputWriteError):
        return err
    name = errno.errorcode.get(err.errno or 0, "")
    cause, fix = _CAUSES.get(err.errno or 0, (err.strerror or str(err), "check the folder"))
    code = f" ({name})" if name else ""
    kept = " (the existing file is unchanged)" if os.path.lexists(path) else ""
    msg = f"cannot write {path}: {cause}{code}; nothing was written{kept}; {fix}"
    return OutputWriteError(err.errno, msg, path)


def _is_write_error(e: BaseException) -> bool:
    return isinstance(e, OSError) and (isinstance(e, OutputWriteError) or e.errno in _CAUSES)


def file_mode() -> int:
    """Permissions of new files: ``0o666`` minus the process umask (``0o644`` for ``022``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc (macOS): read it by setting it (restored at once)
    os.umask(mask)
    return 0o666 & ~mask


def ensure_dir(path: str | os.PathLike) -> str:
    """``os.makedirs(path, exist_ok=True)``, failing with :class:`OutputWriteError` (path and
    cause in words) instead of a bare ``OSError``. Returns ``path``."""
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        if isinstance(e, FileExistsError):  # ``path`` (or a parent) exists as a file
            e = OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        if not _is_write_error(e):
            raise
        raise write_error(path, e) from e
    return path


def _fsync_dir(folder: str) -> None:
    with contextlib.suppress(OSError):  # not supported on every platform / file system
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, tag: str = "") -> Iterator[str]:
    """A temporary file name to write ``path`` through (for libraries that want a name).

    Yields a path in the destination's folder; when the block exits normally the file is
    fsynced, given :func:`file_mode` permissions and renamed onto ``path``. On any error
    the temporary file is removed; write errors (read-only, no space, ...) become
    :class:`OutputWriteError` naming ``path``. The temporary file is named
    ``.tmp-<tag>-<random>-<name>``: a writer can find its own leftovers of a killed run by
    its ``tag`` (e.g. one per host) and delete them.

    Raises:
        OutputWriteError: the folder or file could not be created or written.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise write_error(path, OSError(errno.EISDIR, os.strerror(errno.EISDIR)))
    folder = os.path.dirname(os.path.abspath(path))
    ensure_dir(folder)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".tmp-{tag}-" if tag else ".tmp-",
                                   suffix="-" + os.path.basename(path))
        os.close(fd)
    except OSError as e:
        raise write_error(path, e) from e
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.fsync(fd)
            os.fchmod(fd, file_mode())
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        _remove(tmp)
        if _is_write_error(e):
            raise write_error(path, e) from e  # type: ignore[arg-type]
        raise
    _fsync_dir(folder)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None,
                tag: str = "") -> Iterator[IO[Any]]:
    """An open file object whose content replaces ``path`` atomically when the block ends.

    Args:
        path: destination.
        mode: ``"wb"`` or ``"w"`` (text; ``encoding`` defaults to UTF-8).
        tag: names the temporary file (see :func:`atomic_path`).

    Raises:
        OutputWriteError: see :func:`atomic_path`.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes new files: mode 'w' or 'wb', not {mode!r}")
    with atomic_path(path, tag) as tmp:
        kw = {"encoding": encoding or "utf-8"} if mode == "w" else {}
        with open(tmp, mode, **kw) as f:
            yield f
            f.flush()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, tag: str = "") -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring; ``tag``: see
    :func:`atomic_path`).

    Raises:
        OutputWriteError: the file could not be written (the message names path and cause).
    """
    with atomic_open(path, "wb", tag=tag) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in ``chunk``-byte blocks: the one file content
    hash of the package (checkpoint checksums, data fingerprints, records).

    Raises:
        FileNotFoundError, OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def jsonable(x: Any) -> Any:
    """``x`` as plain JSON types: dicts (keys as ``str``), lists (from lists and tuples),
    ``str`` / ``int`` / ``float`` / ``bool`` / ``None``; NumPy and JAX arrays become nested
    lists, their scalars Python numbers; any other object its ``str``. Used to write
    results and to compare stored settings with requested ones (a tuple and the list it
    was stored as compare equal afterwards)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if x is None or isinstance(x, (str, bool, int, float)):
        return x
    if hasattr(x, "__array__") and hasattr(x, "dtype"):
        a = np.asarray(x)
        return a.item() if a.ndim == 0 else a.tolist()
    return str(x)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2,
                      sort_keys: bool = True) -> None:
    """Atomically write ``obj`` as JSON (indented, key-sorted by default)."""
    atomic_write_bytes(path, json.dumps(obj, indent=indent, sort_keys=sort_keys,
                                        default=str).encode())


def atomic_write_with(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Atomically write whatever ``write(file)`` writes (``np.savez``, ``fig.savefig``...).

    The writer gets the open (seekable) temporary file, not a name, so a library that
    appends a suffix to names (``np.savez``) cannot escape the atomic protocol, and large
    outputs are streamed to disk rather than held in memory.
    """
    with atomic_open(path, "wb") as f:
        write(f)


def save_figure(fig: Any, path: str | os.PathLike, **kwargs: Any) -> str:
    """``fig.savefig`` through the atomic writer (format from the file suffix, e.g. PNG)."""
    path = os.fspath(path)
    fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    atomic_write_with(path, lambda f: fig.savefig(f, format=fmt, **kwargs))
    return path

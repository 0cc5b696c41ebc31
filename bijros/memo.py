"""Keeping inputs read once in a long-lived process (the workers of ``bijros batch``).

Off by default: a single command reads each file once anyway. A batch worker turns it on, so an atlas,
a label map or a model used by many jobs is read (and checked) once. Entries are keyed on the file's
resolved path, size and modification time, so a file changed on disk is read again; callers get a copy
of what was read, so nothing a job does to its inputs reaches the next job.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

_ENTRIES: collections.OrderedDict | None = None
_LIMIT = 0
_SIZES: dict = {}


def enable(max_bytes: int = 4 << 30) -> None:
    """Keep up to ``max_bytes`` of arrays (least recently used go first)."""
    global _ENTRIES, _LIMIT
    _ENTRIES = collections.OrderedDict()
    _LIMIT = int(max_bytes)


def disable() -> None:
    global _ENTRIES
    _ENTRIES = None
    _SIZES.clear()


def enabled() -> bool:
    return _ENTRIES is not None


def file_key(path) -> tuple | None:
    """(resolved path, size, mtime) of a file or folder's entries, or None where it cannot be stat'ed."""
    try:
        p = Path(path).resolve()
        st = p.stat()
        if p.is_dir():
            return (str(p), "dir", tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(p)
                                                if e.is_file())))
        return (str(p), st.st_size, st.st_mtime_ns)
    except OSError:
        return None


def cached(key: tuple | None, load, copy, nbytes=lambda value: 0):
    """``copy(value)`` of the value kept under ``key``, else ``load()`` kept (when on) and copied."""
    if _ENTRIES is None or key is None:
        return load()
    if key in _ENTRIES:
        _ENTRIES.move_to_end(key)
        return copy(_ENTRIES[key])
    value = load()
    _ENTRIES[key] = value
    _SIZES[key] = int(nbytes(value))
    while len(_ENTRIES) > 1 and sum(_SIZES.values()) > _LIMIT:
        old, _ = _ENTRIES.popitem(last=False)
        _SIZES.pop(old, None)
    return copy(value)

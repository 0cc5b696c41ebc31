"""Keeping inputs read more than once in a long-lived process (the workers of ``bijros batch``).

Off by default: a single command reads each file once anyway. A batch worker turns it on, so an atlas,
a label map or a model used by many jobs is read (and checked) once more and then kept; a file read only
once (each job's own target) is not kept, so a worker's memory does not grow with the cohort. Entries are
keyed on the file's resolved path, size and modification time, so a file changed on disk is read again;
callers get a copy of what was kept, so nothing a job does to its inputs reaches the next job.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

_KEPT: collections.OrderedDict | None = None  # key -> (value, bytes), least recently used first
_SEEN: set = set()  # keys read once: kept from their second read on
_LIMIT = 0


def enable(max_bytes: int = 4 << 30) -> None:
    """Keep up to ``max_bytes`` of arrays (least recently used go first)."""
    global _KEPT, _LIMIT
    _KEPT = collections.OrderedDict()
    _SEEN.clear()
    _LIMIT = int(max_bytes)


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
    """``copy(value)`` of the value kept under ``key``, else ``load()`` (kept, when on, from its second read)."""
    if _KEPT is None or key is None:
        return load()
    if key in _KEPT:
        _KEPT.move_to_end(key)
        return copy(_KEPT[key][0])
    if key not in _SEEN:
        _SEEN.add(key)
        return load()
    value = load()
    _KEPT[key] = (value, int(nbytes(value)))
    while len(_KEPT) > 1 and sum(size for _, size in _KEPT.values()) > _LIMIT:
        _KEPT.popitem(last=False)
    return copy(value)

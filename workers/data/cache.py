"""A per-process cache of parsed data files, so the up-front data check and the run that follows read each
file once.

An entry is keyed by the file's identity ((path, mtime, size), or a hub dataset's cache files: see
`workers.data.datasets.Part.identity`) and by how it was parsed (columns, adapter), so a file rewritten on disk
is parsed again by itself. The oldest entries go first once the cache holds `_CACHE_MAX_ENTRIES`.
"""

from __future__ import annotations

from typing import Callable, TypeVar

_CACHE_MAX_ENTRIES = 64
_parsed_files: dict[tuple, object] = {}
_Parsed = TypeVar("_Parsed")


def cached(identity: tuple, how: tuple, parse: Callable[[], _Parsed]) -> _Parsed:
    """parse(), or its earlier result for the same file identity and the same `how` (columns, classes)."""
    key = (*identity, *how)
    if key not in _parsed_files:
        parsed = parse()
        if len(_parsed_files) >= _CACHE_MAX_ENTRIES:
            _parsed_files.pop(next(iter(_parsed_files)))  # the oldest entry
        _parsed_files[key] = parsed
    return _parsed_files[key]


def clear_cache() -> None:
    """Forget every parsed file (the cache also notices a file that changed on disk by itself)."""
    _parsed_files.clear()

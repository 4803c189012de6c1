"""The C allocator's settings for a node process (glibc): memory freed is given back.

A node parses and frees large objects all day — 200 KB batch reports, 1 MiB blocks,
catch-up answers — in its event loop and in worker threads (block application,
LevelDB writes). With glibc's defaults that memory stays in the process after it is
freed, for two reasons measured on a five-node network anchoring 60,000 records
(BENCHMARKS.md, session 7):

* each thread that allocates gets its own arena (up to 8 per core), and what one arena
  frees the others cannot reuse: ~110 MB of the risk centre's 435 MB was thread arenas;
* the mmap threshold is dynamic: once a 1 MiB block is freed, allocations up to that
  size come from the heap instead of their own mapping, and a heap does not shrink
  past a live chunk above the freed ones.

:func:`tune_malloc` sets two arenas and a fixed 1 MiB mmap threshold (allocations above
it get their own mapping, returned on free), before the node starts any thread. Same
load: peak RSS 376–403 → 256–273 MB per node. A 128 KiB threshold gave the same peaks
but cost ~15 % CPU in the throughput phase (blocks and frames of a few hundred KB mapped
and unmapped each time); at 1 MiB the throughput runs matched untuned ones.

Fixing the mmap threshold also stops glibc from moving the *trim* threshold with it
(the dynamic rule keeps it at twice the mmap threshold); left at its 128 KiB default,
every free that leaves more than 128 KiB at the heap's top shrinks the heap with a
system call, and the next allocation grows it again and faults the pages back in.
msgpack's ``packb`` allocates a 256 KiB buffer on every call, so each call paid that:
8.8 µs for a one-key map instead of 0.3 µs, and 70 µs instead of 10 µs to build and
free a 300 KB ``bytes`` (session 10). :func:`tune_malloc` therefore also sets the trim
threshold to 2 MiB, twice the mmap threshold, as the dynamic rule would: at most that
much free memory stays at the top of each arena's heap.

An operator's own ``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_`` or
``MALLOC_TRIM_THRESHOLD_`` wins: the setting it names is left alone.
"""

from __future__ import annotations

import ctypes
import os
from typing import Final

#: ``mallopt`` parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
_M_ARENA_MAX: Final = -8

ARENAS: Final = 2
MMAP_THRESHOLD: Final = 1024 * 1024
TRIM_THRESHOLD: Final = 2 * MMAP_THRESHOLD


def tune_malloc() -> dict[str, int]:
    """Apply the settings above where the environment does not name them; returns what
    was set (``{}`` where there is no glibc ``mallopt``, e.g. musl or macOS).

    Call it before the process starts threads: arenas already made stay. Never raises.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 — glibc only (musl's mallopt does nothing)
    except (OSError, AttributeError):
        return {}
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done: dict[str, int] = {}
    for env, param, value in (
        ("MALLOC_ARENA_MAX", _M_ARENA_MAX, ARENAS),
        ("MALLOC_MMAP_THRESHOLD_", _M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        ("MALLOC_TRIM_THRESHOLD_", _M_TRIM_THRESHOLD, TRIM_THRESHOLD),
    ):
        if env not in os.environ and mallopt(param, value) == 1:
            done[env] = value
    return done

"""The cyclic garbage collector's settings for a node process.

Reference counting frees almost everything a node allocates; the cyclic collector only
looks for cycles, but with CPython's defaults it looks often and far. Measured with a
``gc.callbacks`` timer (``time.thread_time``) on a five-node network in the throughput
bench (BENCHMARKS.md, session 8): ~400 young collections, ~40 middle and 3–4 full ones
per node in 30 s, 0.5–0.7 s of a node's 15 s of CPU (3.5–4.5 %); the full collections
were half of it, each walking every object the process had built at start-up (~90,000:
modules, genesis, config, caches loaded from the store).

:func:`tune_gc`, called once the runtime is built and before the event loop starts:

* collects, then ``gc.freeze()``: the start-up objects move to the permanent generation,
  which no later collection walks again (they live as long as the process anyway; one
  that dies is still freed by its reference count, only a cycle among them would stay);
* raises the young generation's threshold from 700 to :data:`YOUNG_THRESHOLD`
  allocations (net of deallocations) of container objects: a cycle waits a little
  longer to be found; the older generations keep their thresholds (10, 10).

Same bench, tuned: 0.3 s per node, start-up and its collections included (2–3 % of the
node's CPU saved). ``WULIAN_GC_TUNING=0`` leaves the collector as CPython sets it (for
comparison runs).
"""

from __future__ import annotations

import gc
import os
from typing import Final

YOUNG_THRESHOLD: Final = 10_000
ENV: Final = "WULIAN_GC_TUNING"


def tune_gc() -> bool:
    """Freeze what exists now and raise the young threshold (above); returns False, and
    changes nothing, when ``WULIAN_GC_TUNING=0``. Never raises."""
    if os.environ.get(ENV, "1").strip() == "0":
        return False
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    return True

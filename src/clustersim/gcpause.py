"""``paused_gc``: run a block with Python's cyclic garbage collector paused.

Building and simulating ~10^5 job records allocates millions of small objects;
the cyclic collector then runs its generation scans over all of them again and
again (5-10 % of a Philly replay) although the engine creates no reference
cycles that need it (events, records and tuples are freed by reference
counting). The previous state is restored on exit; the collector's next
regular pass then reclaims any cycle a user policy may have made meanwhile.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """Disable the cyclic GC inside the block (re-entrant; restores the previous state)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()

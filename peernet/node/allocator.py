"""glibc malloc settings for a daemon process, so a round's tensors reuse memory instead of fresh pages."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Blocks below this come from the heap and are reused; glibc's own default starts at 128 KiB and only rises
#: after the process frees a larger block. A LeNet round allocates and frees activations of ~2 MB: each was a
#: fresh mmap, page-faulted in and unmapped again, every round (measured: 5% longer rounds for 8 daemons on 2
#: cores than a process whose start-up had happened to raise the threshold). 32 MiB is glibc's own ceiling
#: for the threshold it adjusts by itself.
MMAP_THRESHOLD = 32 << 20
#: Free memory at the top of the heap kept rather than returned to the system (twice the threshold, glibc's rule).
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD


def reuse_freed_memory() -> bool:
    """Set the thresholds in this process; False where the C library is not glibc (nothing changed)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not ok:
        log.debug("mallopt refused the thresholds; keeping the C library's defaults")
    return ok

"""Memory a training stage frees goes back to the system before the next stage loads (devices.py).

glibc keeps freed blocks below its mmap threshold inside the heap; without a trim they still count in the
process's resident memory, and the VAE's freed activations would sit under the UNet's load (issue 13's peak).
"""

from __future__ import annotations

import ctypes
import os
import sys

import pytest

from headshot.devices import return_freed_memory

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.path.exists("/proc/self/statm"), reason="glibc on Linux"
)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_freed_heap_blocks_are_returned_to_the_system():
    # 200 MB in 64 KB blocks (below glibc's mmap threshold: they come from the heap), each written to
    blocks = [ctypes.create_string_buffer(b"x" * (64 << 10)) for _ in range(3200)]
    keep = blocks[-1]  # the heap's top block stays, so free() alone cannot shrink the heap
    del blocks
    before = _resident_bytes()
    return_freed_memory()
    after = _resident_bytes()
    assert keep.raw[:1] == b"x"
    assert before - after > 100 << 20, (before, after)

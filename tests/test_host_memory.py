"""Memory a training stage frees goes back to the system before the next stage loads, and the encoders'
large activations reuse freed pages instead of faulting in fresh ones (devices.py).

glibc keeps freed blocks below its mmap threshold inside the heap; without a trim they still count in the
process's resident memory, and the VAE's freed activations would sit under the UNet's load (issue 13's peak).
Blocks above it (a 512 px VAE activation: 67 MB) get fresh pages each time, each page a fault.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
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


# The allocator's state is the process's: each check below runs in a fresh interpreter, so the heap
# holes earlier tests leave behind cannot decide it.
_PROBES = """
import json, os, resource, sys
import torch
from headshot.devices import reusing_freed_memory

BLOCK = 64 << 20  # over glibc's largest mmap threshold (32 MB): mapped fresh, and unmapped when freed
BIG = 8 * BLOCK  # larger than any hole the probes leave in the heap
PASSES = 4  # 20 blocks of 64 MB: fresh pages each time outside, a few at most inside


def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def layers():
    # a network's forward pass in miniature: each layer's output is a new block, its input then freed
    x = torch.ones(BLOCK // 4)
    for _ in range(4):
        x = x * 2


def freeing_returns(size):
    block = torch.ones(size // 4)  # written, so resident
    before = resident()
    del block
    return before - resident() > size // 2


def refaults():
    layers()  # the first pass's pages come from the kernel
    before = faults()
    for _ in range(PASSES):
        layers()
    return faults() - before


result = {}
probe = sys.argv[1]
if probe == "refaults":
    result["outside"] = refaults()
    with reusing_freed_memory(sys.argv[2]):
        result["inside"] = refaults()
elif probe == "leaving":
    with reusing_freed_memory("cpu"):
        layers()
        result["kept_inside"] = not freeing_returns(BIG)
        held = resident()
    result["returned_on_leaving"] = held - resident()
    result["returns_after"] = freeing_returns(BIG)
elif probe == "nested":
    with reusing_freed_memory("cpu"):
        with reusing_freed_memory("cpu"):
            pass
        result["returns_between"] = freeing_returns(BIG)
    result["returns_after"] = freeing_returns(BIG)
print(json.dumps(result))
"""


def _probe(*args, environment=None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD"))}
    env.update(environment or {})
    done = subprocess.run(
        [sys.executable, "-c", _PROBES, *args], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


_BLOCK_PAGES = (64 << 20) // 4096
_PASS_PAGES = 5 * _BLOCK_PAGES  # the pages one pass of `layers` writes: 5 blocks of 64 MB


def test_inside_large_freed_blocks_are_reused_without_page_faults():
    faults = _probe("refaults", "cpu")
    assert faults["outside"] > 3 * _PASS_PAGES, faults  # 4 passes, every block fresh pages
    # inside, the heap settles within a few blocks (a small allocation can take the front of a hole, so the
    # next block no longer fits there: seen as 3 blocks under a parallel test run), then every block is reused
    assert faults["inside"] < 8 * _BLOCK_PAGES, faults


def test_leaving_returns_what_was_freed_inside_and_frees_large_blocks_again():
    leaving = _probe("leaving")
    assert leaving["kept_inside"], leaving
    assert leaving["returned_on_leaving"] > 256 << 20, leaving
    assert leaving["returns_after"], "large blocks still stay in the heap after leaving"


def test_nested_uses_restore_on_the_last_exit():
    nested = _probe("nested")
    assert nested == {"returns_between": False, "returns_after": True}


@pytest.mark.parametrize("device, environment", [("cuda", {}), ("cpu", {"LD_PRELOAD": "libc.so.6"})])
def test_nothing_changes_on_a_gpu_or_with_an_allocator_the_user_chose(device, environment):
    faults = _probe("refaults", device, environment=environment)
    assert faults["inside"] > 3 * _PASS_PAGES, faults

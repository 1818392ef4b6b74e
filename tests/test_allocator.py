"""harness.allocator: freed blocks stay in the C heap (a real process, page faults counted by the kernel)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: three 12 MB blocks alive together, written, freed: a step's temporaries (plain malloc, so the
#: count depends on the heap policy only); prints the minor page faults per repetition
SCRIPT = """
import ctypes, resource, sys
sys.path.insert(0, sys.argv[2])
if sys.argv[1] == "keep":
    from harness.allocator import keep_freed_memory
    assert keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 12 * 2**20
def step():
    blocks = [libc.malloc(size) for _ in range(3)]
    for block in blocks:
        ctypes.memset(block, 1, size)
    for block in blocks:
        libc.free(block)
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def _glibc() -> bool:
    name = ctypes.util.find_library("c")
    return name is not None and hasattr(ctypes.CDLL(name), "gnu_get_libc_version")


def _faults_per_step(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(ROOT)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(not _glibc(), reason="mallopt thresholds are glibc's")
def test_freed_blocks_are_reused_without_page_faults():
    # glibc's defaults hand the freed 36 MB back to the kernel and fault it in again each step
    # (12 MB blocks are 3,072 pages each); kept, the next step reuses the same pages
    assert _faults_per_step("default") > 3000
    assert _faults_per_step("keep") < 100


@pytest.mark.skipif(not _glibc(), reason="mallopt thresholds are glibc's")
def test_the_switch_keeps_glibcs_defaults():
    out = subprocess.run([sys.executable, "-c", SCRIPT.replace("assert keep_freed_memory()",
                                                               "assert not keep_freed_memory()"), "keep", str(ROOT)],
                         capture_output=True, text=True, check=True, env={**os.environ, "EBM_BENCH_KEEP_FREED_MEMORY": "0"})
    assert float(out.stdout.strip()) > 3000


def test_keep_freed_memory_is_set_once(monkeypatch):
    from harness.allocator import keep_freed_memory

    monkeypatch.delenv("EBM_BENCH_KEEP_FREED_MEMORY", raising=False)
    assert keep_freed_memory() is keep_freed_memory() and isinstance(keep_freed_memory(), bool)
    assert keep_freed_memory() == _glibc()

"""Parallel and serial numba builds of one runtime kernel, each with its own on-disk cache entry (no torch)."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from numba import njit

__all__ = ["parallel_and_serial"]


def parallel_and_serial(py_func: Callable[..., Any]) -> tuple[Any, Any]:
    """``(parallel, serial)`` builds of ``py_func``: ``njit(parallel=True)`` and ``njit(nogil=True)``, both cached.

    numba names a function's cache files after its qualified name and first line, and keys the compiled code by
    signature and bytecode, not by the jit options. Two builds of one Python function therefore share one cache
    entry: whichever build a process saved last is loaded by both in every later process — the serial path then
    runs the parallel build (entering numba's thread pool from the batch-split threads) or the intra-op path runs
    the serial one (measured: a pack_signs call 200× slower, intra-op threads no faster than one thread). The serial
    build is made from a copy of the function under a name of its own, so each has its own cache entry.
    """
    serial_func = types.FunctionType(py_func.__code__, py_func.__globals__, f"{py_func.__name__}_serial",
                                     py_func.__defaults__, py_func.__closure__)
    serial_func.__qualname__ = f"{py_func.__qualname__}_serial"
    serial_func.__module__ = py_func.__module__
    serial_func.__doc__ = py_func.__doc__
    return njit(cache=True, parallel=True)(py_func), njit(cache=True, nogil=True)(serial_func)

"""Popcount intrinsics for the numba bit kernels: ``llvm.ctpop`` on a fixed-width unsigned integer (no torch)."""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["ctpop_intrinsic", "popcount64"]


def ctpop_intrinsic(bits: int, result_type: types.Integer, arg_type: types.Integer):
    """A numba intrinsic counting the set bits of a ``bits``-wide unsigned integer, emitted as ``llvm.ctpop.i<bits>``,
    which LLVM lowers to POPCNT, or VPOPCNTQ/VPOPCNTW when vectorised on AVX-512."""

    def typer(typingctx, x):
        if not isinstance(x, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            fnty = ir.FunctionType(ir.IntType(bits), [ir.IntType(bits)])
            fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.ctpop.i{bits}")
            return builder.call(fn, [args[0]])

        return result_type(arg_type), codegen

    typer.__name__ = f"popcount{bits}"
    return intrinsic(typer)


popcount64 = ctpop_intrinsic(64, types.int64, types.uint64)  # uint64 -> int64

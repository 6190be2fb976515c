"""Larq Compute Engine peer worker: a Keras/larq port of resnet18_cifar, timed by LCE's interpreter on request.

Runs under its own Python with TensorFlow, larq and larq-compute-engine (never the sparks .venv: TF pins clash with
torch/numpy there; docs/benchmarks.md has the commands). It imports neither sparks nor torch, so the parent
(``sparks.bench.lce.LceRunner``) starts it as ``LCE_PYTHON bench/lce_worker.py`` and talks JSON lines over the pipes:

* at start it converts the batch-1 model and writes ``{"ready": true, "flatbuffer_bytes": N, "bconv_ops": 16, ...}``
  (or ``{"ready": false, "error": "..."}`` and exits 1); the converted flatbuffer must hold one ``LceBconv2d`` op per
  binary conv of the network, else it fails;
* then for each line ``{"threads": t, "batch": b, "calls": k}`` it runs ``k`` inferences of a seeded random NHWC
  input and writes one line ``{"seconds": s}`` per call, ``s`` measured around the interpreter call alone (the
  pipe's round trip is not counted). ``"calls": 0`` only prepares (converts the model for batch ``b`` and builds the
  interpreter for ``(t, b)``) and answers ``{"prepared": true}``; an error answers ``{"error": "..."}``.

The port has the shapes of ``sparks.models.create("resnet18_cifar", width=w)``: real 3×3 stem conv + BN; 16
ReActNet-style blocks (LearnableBias → sign → binary 3×3 conv → BN, plus the shortcut — identity, or 2×2 avg pool +
real 1×1 conv + BN where the block downsamples — then RPReLU); global average pool; FC. Weights are random: only the
timing matters. LCE interpreters take a fixed input shape, so each batch size gets its own conversion.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

STAGES = (64, 128, 256, 512)  # channels per stage at width 1
BLOCKS_PER_STAGE = 4  # one binary conv per block: 16 binary convs


def build_model(batch: int, width: float = 1.0, num_classes: int = 10, size: int = 32) -> Any:
    """The Keras/larq port of resnet18_cifar for a fixed batch size (NHWC input)."""
    import larq as lq
    import tensorflow as tf

    init = tf.keras.initializers.RandomNormal(stddev=0.1, seed=0)  # non-zero, so no add folds away

    class LearnableBias(tf.keras.layers.Layer):
        """Per-channel learnable shift (ReActNet's RSign/RPReLU offsets)."""

        def build(self, input_shape: Any) -> None:
            self.bias = self.add_weight(name="bias", shape=(input_shape[-1],), initializer=init)

        def call(self, x: Any) -> Any:
            return x + self.bias

    def bn(x: Any) -> Any:
        return tf.keras.layers.BatchNormalization(gamma_initializer=tf.keras.initializers.RandomUniform(0.5, 1.5),
                                                  beta_initializer=init, epsilon=1e-5)(x)

    def block(x: Any, out: int, stride: int) -> Any:
        y = LearnableBias()(x)
        y = lq.layers.QuantConv2D(out, 3, strides=stride, padding="same", pad_values=1.0,
                                  input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                                  kernel_constraint="weight_clip", use_bias=False)(y)
        y = bn(y)
        if stride != 1 or x.shape[-1] != out:
            s = tf.keras.layers.AveragePooling2D(2)(x)
            s = bn(tf.keras.layers.Conv2D(out, 1, use_bias=False)(s))
        else:
            s = x
        z = LearnableBias()(tf.keras.layers.Add()([y, s]))  # RPReLU: shift, PReLU, shift
        z = tf.keras.layers.PReLU(alpha_initializer=tf.keras.initializers.Constant(0.25), shared_axes=[1, 2])(z)
        return LearnableBias()(z)

    chans = [max(1, int(round(c * width))) for c in STAGES]
    inp = tf.keras.Input(shape=(size, size, 3), batch_size=batch)
    x = bn(tf.keras.layers.Conv2D(chans[0], 3, padding="same", use_bias=False)(inp))
    for i, c in enumerate(chans):
        for j in range(BLOCKS_PER_STAGE):
            x = block(x, c, 2 if (i > 0 and j == 0) else 1)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inp, tf.keras.layers.Dense(num_classes)(x))


def op_counts(flatbuffer: bytes) -> dict[str, int]:
    """Operator name → count in the flatbuffer's main subgraph (custom ops by their custom code)."""
    from larq_compute_engine.mlir.python import tflite_schema as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(flatbuffer), 0))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    counts: dict[str, int] = {}
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = code.customCode.decode() if code.customCode else names.get(builtin, str(builtin))
        counts[name] = counts.get(name, 0) + 1
    return counts


class Worker:
    """Converted flatbuffers per batch and LCE interpreters per (threads, batch), built on first use."""

    def __init__(self, width: float, seed: int) -> None:
        self.width, self.seed = width, seed
        self.flatbuffers: dict[int, bytes] = {}
        self.interpreters: dict[tuple[int, int], Any] = {}
        self.inputs: dict[int, Any] = {}

    def flatbuffer(self, batch: int) -> bytes:
        """The LCE flatbuffer for ``batch``; fails if it lacks one LceBconv2d per binary conv."""
        if batch not in self.flatbuffers:
            import larq_compute_engine as lce
            import tensorflow as tf

            tf.keras.backend.clear_session()
            fb = lce.convert_keras_model(build_model(batch, self.width))
            n = op_counts(fb).get("LceBconv2d", 0)
            if n != len(STAGES) * BLOCKS_PER_STAGE:
                raise RuntimeError(f"converted model has {n} LceBconv2d ops, expected "
                                   f"{len(STAGES) * BLOCKS_PER_STAGE}: ops {op_counts(fb)}")
            self.flatbuffers[batch] = fb
        return self.flatbuffers[batch]

    def interpreter(self, threads: int, batch: int) -> Any:
        """LCE's optimised interpreter (indirect BGEMM, no reference bconv, no XNNPack) for ``(threads, batch)``."""
        key = (threads, batch)
        if key not in self.interpreters:
            from larq_compute_engine.tflite.python.interpreter import Interpreter

            self.interpreters[key] = Interpreter(self.flatbuffer(batch), num_threads=threads,
                                                 use_reference_bconv=False, use_indirect_bgemm=True)
        return self.interpreters[key]

    def run(self, threads: int, batch: int, calls: int) -> list[float]:
        """Seconds of each of ``calls`` interpreter calls on a seeded random (batch, H, W, 3) input."""
        import numpy as np

        raw = self.interpreter(threads, batch).interpreter  # the C++ wrapper: predict(list of full-batch arrays)
        if batch not in self.inputs:
            shape = raw.input_shapes[0]
            self.inputs[batch] = np.random.default_rng(self.seed).standard_normal(shape).astype(np.float32)
        x = [self.inputs[batch]]
        out = []
        for _ in range(calls):
            t0 = time.perf_counter()
            raw.predict(x)
            out.append(time.perf_counter() - t0)
        return out


_REPLY = sys.stdout


def send(obj: dict[str, Any]) -> None:
    """One JSON line to the parent."""
    _REPLY.write(json.dumps(obj) + "\n")
    _REPLY.flush()


def protect_stdout() -> None:
    """Keep the protocol pipe for :func:`send` alone: whatever TF, larq or the converter print (Python or C level)
    goes to stderr."""
    global _REPLY
    _REPLY = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    protect_stdout()
    try:
        import larq_compute_engine as lce
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)  # conversion only; keep TF off the timed cores
        tf.config.threading.set_inter_op_parallelism_threads(1)
        worker = Worker(args.width, args.seed)
        fb = worker.flatbuffer(1)
        counts = op_counts(fb)
        send({"ready": True, "flatbuffer_bytes": len(fb), "bconv_ops": counts.get("LceBconv2d", 0),
              "ops": counts, "lce": lce.__version__, "tensorflow": tf.__version__})
    except Exception as e:  # noqa: BLE001 - reported to the parent in one line
        send({"ready": False, "error": f"{type(e).__name__}: {e}"})
        return 1
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            cmd = json.loads(line)
            t, b, k = int(cmd["threads"]), int(cmd["batch"]), int(cmd.get("calls", 1))
            if k == 0:
                worker.interpreter(t, b)
                send({"prepared": True})
            for s in worker.run(t, b, k) if k else []:
                send({"seconds": s})
        except Exception as e:  # noqa: BLE001 - reported to the parent, which decides
            send({"error": f"{type(e).__name__}: {e}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())

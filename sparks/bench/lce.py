"""Larq Compute Engine as a peer of the packed runtime, run in its own Python (TensorFlow clashes with our pins).

:class:`LceRunner` starts ``bench/lce_worker.py`` under the given interpreter (a venv with tensorflow, larq and
larq-compute-engine; docs/benchmarks.md has the commands) and speaks its JSON-lines protocol: the worker converts a
Keras/larq port of resnet18_cifar per batch size, checks its 16 ``LceBconv2d`` ops, and times each interpreter call
itself, so :func:`sparks.bench.peers.interleaved_times` records the worker's seconds (:class:`SelfTimed`), not the
pipe's round trip.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sparks.bench.peers import PeerUnavailable, SelfTimed

WORKER = Path(__file__).resolve().parents[2] / "bench" / "lce_worker.py"
START_TIMEOUT_S = 900.0  # TF import + one conversion: ~30 s quiet, minutes on a loaded 2-core machine


class LceRunner:
    """A running LCE worker process; :meth:`runner` prepares (threads, batch) and returns its self-timed call."""

    name = "lce-indirect-bgemm"

    def __init__(self, python: str | Path, width: float = 1.0, worker: str | Path = WORKER,
                 timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the worker and wait for its ready line; raises :class:`PeerUnavailable` (one line) on any failure."""
        python = Path(python)
        if not python.exists():
            raise PeerUnavailable(f"LCE python {python} does not exist")
        self.timeout_s = timeout_s
        self.stderr_tail: list[str] = []
        try:
            self.proc = subprocess.Popen([str(python), str(worker), "--width", str(width)], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        except OSError as e:
            raise PeerUnavailable(f"cannot start {python}: {e}") from e
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        self.err_thread = threading.Thread(target=self._pump, args=(self.proc.stderr, self._keep_stderr), daemon=True)
        self.err_thread.start()
        ready = self._read()
        if not ready.get("ready"):
            self.close()
            raise PeerUnavailable(f"LCE worker failed: {ready.get('error', ready)}")
        self.size_bytes = int(ready["flatbuffer_bytes"])
        self.info: dict[str, Any] = {k: ready[k] for k in ("lce", "tensorflow", "bconv_ops", "ops") if k in ready}

    @staticmethod
    def _pump(stream: Any, put: Callable[[Any], None]) -> None:
        for line in stream:
            put(line)
        put(None)

    def _keep_stderr(self, line: str | None) -> None:
        if line is not None and line.strip():
            self.stderr_tail = [*self.stderr_tail[-19:], line.rstrip()]

    def _read(self) -> dict[str, Any]:
        """The worker's next JSON reply (non-JSON stdout lines are skipped); one-line PeerUnavailable if it died or
        stayed silent past the timeout."""
        while True:
            try:
                line = self.lines.get(timeout=self.timeout_s)
            except queue.Empty:
                self.close()
                raise PeerUnavailable(f"LCE worker silent for {self.timeout_s:.0f} s") from None
            if line is None:
                self.proc.wait()
                self.err_thread.join(timeout=5)  # its last line says why
                last = self.stderr_tail[-1] if self.stderr_tail else "no stderr"
                raise PeerUnavailable(f"LCE worker exited (code {self.proc.returncode}): {last}")
            try:
                reply = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(reply, dict):
                return reply

    def request(self, threads: int, batch: int, calls: int) -> dict[str, Any]:
        """Send one command; the first reply (``calls`` > 1 leaves the rest to :meth:`_read`)."""
        if self.proc.poll() is not None:
            raise PeerUnavailable(f"LCE worker is not running (code {self.proc.returncode})")
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"threads": threads, "batch": batch, "calls": calls}) + "\n")
            self.proc.stdin.flush()
        except OSError as e:
            raise PeerUnavailable(f"LCE worker pipe closed: {e}") from e
        reply = self._read()
        if "error" in reply:
            raise PeerUnavailable(f"LCE worker: {reply['error']}")
        return reply

    def seconds(self, threads: int, batch: int) -> float:
        """One interpreter call on a (batch, H, W, 3) input, timed inside the worker."""
        return float(self.request(threads, batch, 1)["seconds"])

    def runner(self, threads: int, x: np.ndarray) -> SelfTimed:
        """Convert/build for (threads, len(x)) now, untimed; the returned call times one inference in the worker (on
        its own seeded NHWC input of the same shape as ``x``, so that no image crosses the pipe)."""
        batch = int(x.shape[0])
        self.request(threads, batch, 0)
        return SelfTimed(lambda: self.seconds(threads, batch))

    def close(self) -> None:
        """End the worker (closing stdin ends its loop; kill if it lingers)."""
        if self.proc.poll() is None:
            try:
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def start_lce(python: str | Path | None, width: float = 1.0, print_fn: Callable[[str], Any] = print,
              **kwargs: Any) -> LceRunner | None:
    """The LCE peer, or ``None`` after one ``print_fn`` line saying why it is skipped (no ``--lce-python`` given, the
    interpreter missing, the worker failing to start or to convert)."""
    if python is None:
        print_fn(f"# {LceRunner.name} skipped: no --lce-python given (docs/benchmarks.md: how to build its venv)")
        return None
    try:
        return LceRunner(python, width=width, **kwargs)
    except PeerUnavailable as e:
        print_fn(f"# {LceRunner.name} skipped: {e}")
        return None

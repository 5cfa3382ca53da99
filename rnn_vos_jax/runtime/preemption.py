"""Stopping a training run cleanly on SIGTERM (preemption, schedulers) and SIGINT (Ctrl-C).

While training steps run, `StopRequests` catches both signals instead of letting them kill the
process. The loop asks `poll()` after dispatching each step; once it answers with a signal, the
loop saves a checkpoint at that step and raises `Preempted`, whose exit status is 128 + the signal
number (143 for SIGTERM, 130 for SIGINT), as a shell reports a process killed by it. A rerun of
the same command resumes at the saved step.

Several processes: a signal may reach only some of them (one host's maintenance event), so they
agree on the step to stop at. Every step each process contributes its signal number (0 if none)
to a max over all devices; the loop reads the previous step's result, so the check never waits on
the step just dispatched and all processes stop after the same step, at most two steps after the
first signal. SIGTERM wins over SIGINT when different processes got different signals.

Further signals while stopping are logged and ignored (SIGKILL still ends the process at once;
a checkpoint cut short that way is never taken for the latest: checkpoints.py).
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Self

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_status(signum: int) -> int:
    """The exit status of a run stopped by `signum`: 128 + signum (SIGTERM 143, SIGINT 130)."""
    return 128 + int(signum)


class Preempted(SystemExit):
    """Raised after the stop checkpoint is written; exits the program with `exit_status`.

    A SystemExit, so that `except Exception` handlers let it through and absl's app.run ends the
    process with its status.
    """

    def __init__(self, signum: int, step: int):
        super().__init__(exit_status(signum))
        self.signum, self.step = int(signum), int(step)


class StopRequests:
    """Context manager that records SIGTERM / SIGINT and tells all processes when to stop.

    Outside the main thread (where Python cannot install handlers) it records nothing.
    """

    def __init__(self, signals=SIGNALS):
        self._signals = tuple(signals)
        self._old: dict[int, object] = {}
        self.signum: int | None = None
        self.received_at: float | None = None
        self.received_step: int | None = None  # the step first polled after the signal
        self._pending = None  # previous step's all-process max, still on the devices
        self._reduce = None

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for s in self._signals:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            # None: the old handler was not installed from Python (e.g. by jax.distributed).
            signal.signal(s, old if old is not None else signal.SIG_DFL)
        self._old = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            logging.warning("Received %s again: already stopping (SIGKILL aborts)", name)
            return
        self.signum, self.received_at = int(signum), time.time()
        logging.warning(
            "Received %s: finishing the current step, then saving a checkpoint and exiting", name
        )

    def poll(self, step: int = 0) -> int | None:
        """Called once per dispatched `step`; the signal to stop on after this step, or None.

        Single process: the signal received so far. Several processes: the all-process max of
        the previous step's poll, the same answer in every process. `received_step` is the
        first step polled after this process received (or learned of) the signal.
        """
        if self.signum is not None and self.received_step is None:
            self.received_step = int(step)
        if jax.process_count() == 1:
            return self.signum
        if self._reduce is None:
            self._reduce = _all_process_max()
        previous, self._pending = self._pending, self._reduce(self.signum or 0)
        if previous is None:
            return None
        agreed = int(np.asarray(previous.addressable_data(0)))
        if agreed and self.signum is None:
            self.signum, self.received_at, self.received_step = agreed, time.time(), int(step)
            logging.warning(
                "Another process received %s: stopping with it", signal.Signals(agreed).name
            )
        return agreed or None

    def seconds_since_signal(self) -> float:
        return time.time() - self.received_at if self.received_at is not None else 0.0


def _all_process_max():
    """value (this process's int) -> replicated int32 scalar: the max over all processes, async."""
    mesh = Mesh(np.asarray(jax.devices()), ("all",))
    per_device = NamedSharding(mesh, PartitionSpec("all"))
    reduce = jax.jit(jnp.max, out_shardings=NamedSharding(mesh, PartitionSpec()))

    def run(value: int) -> jax.Array:
        local = np.full((jax.local_device_count(),), value, np.int32)
        return reduce(jax.make_array_from_process_local_data(per_device, local))

    return run

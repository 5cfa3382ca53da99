"""Throughput figures: FLOPs per call of a compiled function, achieved FLOP/s, MFU, compile time.

FLOPs come from XLA's cost analysis of the compiled executable (`jitted.lower(*args).compile()`,
the same cache entry a plain `jitted(*args)` call then uses, so nothing compiles twice). Under
SPMD that executable is one device's program, so the count is multiplied by the number of devices
the function runs on. Two XLA conventions to know when reading the figures:
  - a multiply-add counts 2 FLOPs; a convolution counts only the kernel taps that land inside the
    input (not the zero padding); transcendental ops (exp, tanh) are not counted as FLOPs;
  - a loop that stays a loop after compilation (lax.scan with unroll < length, e.g. the configs'
    model.scan_unroll = 1 on accelerators) has its body counted ONCE, not once per iteration:
    then the FLOP/s and MFU derived here are lower bounds (`StepCost.loops` lists the loops'
    trip counts so the log can say so).
MFU = achieved FLOP/s / (peak dense bf16 FLOP/s per chip x chips), with the peaks of
PEAK_BF16_FLOPS; on CPU or a device kind not in the table there is no MFU, only FLOP/s.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable, Mapping, Sequence

import jax

# (regular expression, matched in full against the lower-cased jax.devices()[0].device_kind;
# dense bfloat16 FLOP/s per chip from the vendors' data sheets). Kinds whose peak differs from
# the listed part (H100 PCIe / NVL, TPU v4 lite) are left out rather than given a wrong MFU.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    (r"tpu v4", 275e12),
    (r"tpu v5 ?lite|tpu v5e", 197e12),
    (r"tpu v5p?", 459e12),
    (r"tpu v6 ?lite|tpu v6e", 918e12),
    (r"nvidia a100[- ].*", 312e12),
    (r"nvidia h100 (\d+gb hbm3.*|sxm.*)", 989e12),
    # CUDA names the H200 NVL (835e12) "NVIDIA H200" too; the SXM part's figure is used.
    (r"nvidia h200( \d+gb.*)?", 989e12),
)


def peak_flops_per_chip(device_kind: str) -> float | None:
    """Peak dense bf16 FLOP/s of one chip of `device_kind` (e.g. 'TPU v5 lite'); None if unknown."""
    kind = device_kind.strip().lower()
    for pattern, peak in PEAK_BF16_FLOPS:
        if re.fullmatch(pattern, kind):
            return peak
    return None


def cost_analysis_flops(compiled) -> float | None:
    """The 'flops' of `compiled.cost_analysis()` (a dict, or a list of dicts in older JAX: summed);
    None when the backend gives no cost analysis or no positive FLOP count."""
    try:
        analysis = compiled.cost_analysis()
    except (NotImplementedError, RuntimeError):  # backends without a cost model
        return None
    if isinstance(analysis, Mapping):
        analysis = [analysis]
    counts = [a.get("flops") for a in analysis or () if isinstance(a, Mapping)]
    counts = [float(c) for c in counts if c is not None]
    total = sum(counts)
    return total if counts and total > 0 else None


_TRIP_COUNT = re.compile(r'\bwhile\(.*"known_trip_count":\{"n":"(\d+)"\}')


def loop_trip_counts(compiled) -> tuple[int, ...]:
    """Trip counts (> 1) of the while loops left in the compiled HLO, whose bodies XLA's cost
    analysis counts once."""
    try:
        text = compiled.as_text()
    except (NotImplementedError, RuntimeError):  # not every backend prints its executable
        return ()
    return tuple(n for n in map(int, _TRIP_COUNT.findall(text or "")) if n > 1)


@dataclasses.dataclass(frozen=True)
class StepCost:
    """What one call of a compiled function costs, and the peak it is measured against.

    Attributes:
      flops: FLOPs per call over all devices (None: the backend gave no count).
      num_devices: devices the call runs on.
      device_kind: jax device_kind of those devices.
      loops: trip counts of loops whose bodies `flops` counts once (empty: exact count).
    """

    flops: float | None
    num_devices: int
    device_kind: str
    loops: tuple[int, ...] = ()

    @property
    def peak_flops(self) -> float | None:
        """Peak bf16 FLOP/s of all `num_devices` chips (None on CPU / unknown kinds)."""
        peak = peak_flops_per_chip(self.device_kind)
        return None if peak is None else peak * self.num_devices

    def rates(self, calls_per_sec: float) -> dict[str, float]:
        """{'flops_per_sec'[, 'mfu']} at `calls_per_sec`; {} when the FLOP count is unknown."""
        if self.flops is None:
            return {}
        out = {"flops_per_sec": self.flops * calls_per_sec}
        if self.peak_flops is not None:
            out["mfu"] = out["flops_per_sec"] / self.peak_flops
        return out

    def describe(self, what: str) -> str:
        """One log line: the count, the devices and the peak (or why there is none)."""
        if self.flops is None:
            return f"{what}: XLA gave no FLOP count on {self.device_kind}; FLOP/s not reported"
        line = f"{what}: {format_flops(self.flops)} per call on {self.num_devices} x {self.device_kind}"
        if self.peak_flops is not None:
            line += f" (peak {format_flops(self.peak_flops)}/s bf16)"
        else:
            line += " (no peak known: FLOP/s only, no MFU)"
        if self.loops:
            line += (
                f"; loops of {list(self.loops)} iterations are counted once by XLA, so FLOP/s "
                "and MFU are lower bounds (unroll the scan, model.scan_unroll, for exact figures)"
            )
        return line


def step_cost(jitted: Callable, *args, num_devices: int | None = None, **kwargs) -> StepCost:
    """Compiles `jitted` for `args` (a cache hit if it already ran on such arguments; the later
    `jitted(*args)` call reuses this compilation) and reads its cost.

    Args:
      jitted: a jax.jit-wrapped function.
      *args, **kwargs: arguments as the call will get them (arrays or ShapeDtypeStructs with
        the same shapes, dtypes and shardings; donated arrays are not consumed here).
      num_devices: devices the computation is partitioned over (default: those of the
        executable's first input sharding, else 1).
    """
    compiled = jitted.lower(*args, **kwargs).compile()
    devices = _devices(compiled) if num_devices is None else int(num_devices)
    flops = cost_analysis_flops(compiled)
    kind = jax.devices()[0].device_kind
    return StepCost(
        flops=None if flops is None else flops * devices,
        num_devices=devices,
        device_kind=kind,
        loops=loop_trip_counts(compiled),
    )


def _devices(compiled) -> int:
    shardings = jax.tree.leaves(compiled.input_shardings)
    return len(shardings[0].device_set) if shardings else 1


def format_flops(x: float) -> str:
    """12.3 GFLOP style, SI prefixes up to peta."""
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}FLOP"
    return f"{x:.3g} FLOP"


_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


class _CompileClock:
    """Seconds this process has spent tracing, lowering and compiling JAX functions (all threads),
    from jax.monitoring's duration events; listens from the first `seconds()` call on."""

    def __init__(self, events: Sequence[str] = _COMPILE_EVENTS):
        self._events = frozenset(events)
        self._total = 0.0
        self._lock = threading.Lock()
        self._listening = False

    def _listen(self, event: str, duration: float, **_) -> None:
        if event in self._events:
            with self._lock:
                self._total += duration

    def seconds(self) -> float:
        with self._lock:
            if not self._listening:
                jax.monitoring.register_event_duration_secs_listener(self._listen)
                self._listening = True
            return self._total


compile_clock = _CompileClock()

"""Throughput: XLA's FLOP counts against hand counts, the peak table, MFU, the progress figures,
and the accelerator benchmark's CPU smoke run (no timing assertions)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from benchmarks import train_step as bench_train_step
from rnn_vos_jax.models import layers
from rnn_vos_jax.models.hs2s_encoder import HS2SEncoder
from rnn_vos_jax.runtime import throughput
from rnn_vos_jax.training import loop, sharding


def _flops(fn, *args):
    return throughput.step_cost(jax.jit(fn), *args).flops


def _taps(n: int, k: int, stride: int, pad: int, dilation: int = 1) -> int:
    """(output position, kernel tap) pairs along one axis whose tap lands inside the input (XLA
    does not count multiplications with the zero padding)."""
    out = (n + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    return sum(0 <= o * stride - pad + j * dilation < n for o in range(out) for j in range(k))


def test_taps_known_answers():
    assert _taps(14, 3, 1, 0) == 12 * 3  # no padding: every tap of every output
    assert _taps(16, 3, 1, 1) == 3 * 16 - 2  # 'same': each border output loses one tap
    assert _taps(16, 3, 2, 1) == 3 * 8 - 1  # stride 2: only the first output reaches the pad
    assert _taps(8, 1, 1, 0) == 8


def test_dense_flops_equal_hand_count():
    x, w, b = jnp.ones((8, 64)), jnp.ones((64, 32)), jnp.ones((32,))
    # 2*M*N*K for the matmul (a multiply-add is 2 FLOPs) + M*N for the bias.
    assert _flops(lambda x, w, b: x @ w + b, x, w, b) == 2 * 8 * 64 * 32 + 8 * 32


@pytest.mark.parametrize("stride,pad", [(1, 0), (1, 1), (2, 1)])
def test_conv_flops_equal_hand_count(stride, pad):
    img, k = jnp.ones((2, 16, 20, 3)), jnp.ones((3, 3, 3, 8))

    def conv(img, k):
        return jax.lax.conv_general_dilated(
            img, k, (stride, stride), ((pad, pad),) * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    # 2 * B * (in-input taps over H) * (over W) * Cin * Cout; without padding this is the
    # textbook 2*B*H'*W'*k*k*Cin*Cout.
    hand = 2 * 2 * _taps(16, 3, stride, pad) * _taps(20, 3, stride, pad) * 3 * 8
    if pad == 0:
        assert hand == 2 * 2 * 14 * 18 * 3 * 3 * 3 * 8
    assert _flops(conv, img, k) == hand


def test_sharded_call_counts_every_device():
    # The compiled SPMD program is one device's share; step_cost multiplies it back.
    mesh = sharding.make_mesh(2)
    rep, rows = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))
    fn = jax.jit(lambda x, w: x @ w, in_shardings=(rows, rep), out_shardings=rows)
    x = jax.device_put(jnp.ones((16, 64)), rows)
    w = jax.device_put(jnp.ones((64, 32)), rep)
    cost = throughput.step_cost(fn, x, w)
    assert cost.num_devices == 2
    assert cost.flops == 2 * 16 * 64 * 32


def _conv_count(module, *args):
    """Hand count of every layers.Conv call of `module.apply(*args)`: (FLOPs, output elements)."""
    flops, outputs = [], []

    def record(next_fun, call_args, kwargs, context):
        y = next_fun(*call_args, **kwargs)
        m = context.module
        if isinstance(m, layers.Conv) and context.method_name == "__call__":
            x = call_args[0]
            kh, kw = layers._pair(m.kernel_size)
            ph, pw = (kh // 2, kw // 2) if m.padding is None else layers._pair(m.padding)
            sh, sw = layers._pair(m.strides)
            assert m.dilation == 1
            n, h, w, cin = x.shape
            flops.append(2 * n * _taps(h, kh, sh, ph) * _taps(w, kw, sw, pw) * cin * m.features)
            outputs.append(y.size)
        return y

    with nn.intercept_methods(record):
        jax.eval_shape(lambda *a: module.apply(*a), *args)
    return sum(flops), sum(outputs)


def test_family_encoder_flops_equal_hand_count_of_its_convs():
    # The HS2S encoder (ResNet-50 layout, one block per stage, 1/16 width) on 2 frames + masks.
    enc = HS2SEncoder(blocks=(1, 1, 1, 1), width_divisor=16)
    x, m = jnp.zeros((2, 32, 64, 3)), jnp.zeros((2, 32, 64, 1))
    variables = jax.jit(lambda k: enc.init(k, x, m))(jax.random.key(0, impl="rbg"))
    convs, conv_outputs = _conv_count(enc, variables, x, m)
    xla = _flops(lambda v, x, m: enc.apply(v, x, m), variables, x, m)
    # The 20 convolutions are the hand count; what XLA counts on top is elementwise work on
    # their outputs (frozen BatchNorm's scale and shift, ReLU, residual adds, the max-pool's
    # compares): a few FLOPs per conv output element (measured: ~3.9), never more than 8.
    assert convs <= xla <= convs + 8 * conv_outputs
    assert (xla - convs) / convs < 0.1


def test_loops_are_reported_as_counted_once():
    x, w = jnp.ones((8, 64)), jnp.ones((64, 64))

    def scan(x, w, unroll):
        body = lambda c, _: (jnp.tanh(c @ w), None)
        return jax.lax.scan(body, x, None, length=4, unroll=unroll)[0]

    looped = throughput.step_cost(jax.jit(lambda x, w: scan(x, w, 1)), x, w)
    unrolled = throughput.step_cost(jax.jit(lambda x, w: scan(x, w, 4)), x, w)
    body = 2 * 8 * 64 * 64
    assert unrolled.flops == 4 * body and unrolled.loops == ()
    assert looped.loops == (4,) and body <= looped.flops < 2 * body  # XLA: the body once
    assert "lower bounds" in looped.describe("scan")


def test_step_cost_reuses_the_jit_compilation_and_keeps_donation():
    mesh = sharding.make_mesh(2)
    rep, rows = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))
    fn = jax.jit(
        lambda w, x, s: (w - s * (x.T @ (x @ w)), (x @ w).sum()),
        in_shardings=(rep, rows, rep),
        out_shardings=(rep, rep),
        donate_argnums=(0,),
    )
    w = jax.device_put(jnp.ones((32, 32)), rep)
    x = jax.device_put(jnp.ones((8, 32)), rows)
    s = jnp.float32(0.5)
    throughput.step_cost(fn, w, x, s)
    compiles = []

    def listen(event, seconds, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        w2, _ = fn(w, x, s)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert compiles == []  # the call ran the executable step_cost compiled
    assert w.is_deleted() and not w2.is_deleted()


class _Compiled:
    def __init__(self, analysis):
        self.analysis = analysis

    def cost_analysis(self):
        if isinstance(self.analysis, Exception):
            raise self.analysis
        return self.analysis


def test_cost_analysis_forms():
    assert throughput.cost_analysis_flops(_Compiled({"flops": 12.0})) == 12.0
    assert throughput.cost_analysis_flops(_Compiled([{"flops": 5.0}, {"flops": 7.0}])) == 12.0
    assert throughput.cost_analysis_flops(_Compiled({"bytes accessed": 3.0})) is None
    assert throughput.cost_analysis_flops(_Compiled(None)) is None
    assert throughput.cost_analysis_flops(_Compiled(NotImplementedError("no cost model"))) is None
    unknown = throughput.StepCost(None, 1, "cpu")
    assert unknown.rates(10.0) == {} and "not reported" in unknown.describe("step")


@pytest.mark.parametrize(
    "kind,peak",
    [
        ("TPU v4", 275e12),
        ("TPU v5 lite", 197e12),
        ("TPU v5e", 197e12),
        ("TPU v5", 459e12),
        ("TPU v5p", 459e12),
        ("TPU v6 lite", 918e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A100-SXM4-40GB", 312e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H200", 989e12),
        ("cpu", None),
        ("NVIDIA H100 PCIe", None),  # another part's peak: no MFU rather than a wrong one
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_peak_table(kind, peak):
    assert throughput.peak_flops_per_chip(kind) == peak


def test_mfu_arithmetic():
    cost = throughput.StepCost(flops=2e12, num_devices=4, device_kind="TPU v5 lite")
    assert cost.peak_flops == 4 * 197e12
    rates = cost.rates(calls_per_sec=10.0)
    assert rates["flops_per_sec"] == 2e13
    assert rates["mfu"] == pytest.approx(2e13 / (4 * 197e12))
    assert set(throughput.StepCost(2e12, 1, "cpu").rates(10.0)) == {"flops_per_sec"}
    assert throughput.format_flops(1.23e12) == "1.23 TFLOP"


def test_progress_reports_flops_per_sec_and_mfu():
    peak = 8 * 197e12
    progress = loop._Progress(total=10, global_batch=4, peak_flops=peak)
    progress.add({"loss": 1.0}, 1e12)
    progress.flush(1)  # starts the clock
    for flops in (1e12, 3e12):  # two steps of different cost (BatchNorm modes)
        progress.add({"loss": 1.0}, flops)
    m = progress.flush(3)
    # Both rates are over the same seconds: their ratio is the mean FLOPs per step.
    assert m["flops_per_sec"] / m["steps_per_sec"] == pytest.approx(2e12)
    assert m["mfu"] == pytest.approx(m["flops_per_sec"] / peak)
    m.update(epoch=1.0, learning_rate=1e-3)
    line = loop._progress_line(3, 10, m)
    assert "FLOP/s, MFU" in line and "flops_per_sec" not in line and " mfu " not in line
    # A step whose FLOPs are unknown leaves FLOP/s out rather than mixing known and unknown.
    progress.add({"loss": 1.0}, None)
    assert "flops_per_sec" not in progress.flush(4)


def test_compile_clock_counts_compilation():
    before = throughput.compile_clock.seconds()
    jax.jit(lambda x: jnp.sin(x) * 3.0 + 1.0)(np.arange(7.0)).block_until_ready()
    assert throughput.compile_clock.seconds() > before


def test_benchmark_cpu_smoke(capsys):
    # The accelerator command at a tiny size on CPU: inference only (the tiny train step alone
    # takes ~30 s to compile on CPU; test_train covers the step's FLOP figures).
    argv = ["--configs=hs2s:demo_base", "--image_size=32,32", "--frames=2", "--objects=2"]
    bench_train_step.main([*argv, "--repeats=1", "--dtype=bfloat16", "--inference_only"])
    out = capsys.readouterr().out
    assert "bfloat16" in out and "peak bf16: unknown (no MFU)" in out
    line = next(row for row in out.splitlines() if row.startswith("hs2s:demo_base"))
    assert "frames/s/object" in line and "TFLOP/s" in line and "MFU" not in line

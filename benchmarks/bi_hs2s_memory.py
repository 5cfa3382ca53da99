r"""Memory of Bi-HS2S's offline prediction in the video length, from XLA's compiled statistics.

    python benchmarks/bi_hs2s_memory.py [--config=configs/bi_hs2s.py:demo] \
        [--image_size=96x96] [--frames=5,10,20,40] [--window=10 --overlap=2] \
        [--videos=100,1000] [--objects=1] [--scan_unroll=0]

The jitted `predict_clip` (what predictors.ClipPredictor runs) of the configured model is lowered
on abstract inputs (random-free: variables from jax.eval_shape of init) and compiled with XLA's
default options; nothing runs, so this is not a timing. `compiled.memory_analysis()` gives the
bytes of its arguments (variables + frames + first masks), outputs (logits), and temporaries
(every frame's encoder features and memory outputs, held for the decode scan, plus scratch);
peak = argument + output - alias + temp, the buffers XLA's assignment keeps live at once.

Rows: the whole clip at each length in --frames (memory grows linearly: the per-frame slope is
printed), then the windowed mode (config.eval.clip_window=W, clip_overlap=O): the predictor
calls the same W-frame program once per window, so its device peak is that of a W-frame clip
whatever the video length; for each --videos length the row gives the number of windows and
the whole-clip peak of that length beside it. The lengths are compiled directly (time is a
loop, so compile time does not grow with them at scan_unroll 1).

The figures depend on the backend (fusion and buffer assignment differ between CPU, GPU and
TPU): the device is printed. Host memory (every frame at the model size, uint8) is not counted.
"""

import argparse
import sys
import time

import jax
import jax.numpy as jnp

from rnn_vos_jax import models
from rnn_vos_jax.inference import predictors
from rnn_vos_jax.runtime.config_files import load_config

MIB = 2**20


def abstract_variables(model, image_size):
    """Variable shapes of `model` (no values, no compilation)."""
    return jax.eval_shape(lambda k: models.init_variables(model, k, image_size), jax.random.key(0))


def clip_memory(model, variables, image_size, frames, objects=1) -> dict[str, int]:
    """memory_analysis() of the jitted predict_clip on [objects, frames, H, W, 3] (bytes)."""
    if models.family_of(model).prediction != "clip":
        raise ValueError(f"{type(model).__name__} has no whole-clip prediction")
    h, w = image_size
    fn = jax.jit(lambda v, f, m: model.apply(v, f, m, method="predict_clip"))
    args = (
        variables,
        jax.ShapeDtypeStruct((objects, frames, h, w, 3), jnp.uint8),
        jax.ShapeDtypeStruct((objects, h, w, 1), jnp.float32),
    )
    stats = fn.lower(*args).compile().memory_analysis()
    out = {
        "argument": stats.argument_size_in_bytes,
        "output": stats.output_size_in_bytes,
        "alias": stats.alias_size_in_bytes,
        "temp": stats.temp_size_in_bytes,
    }
    out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
    return out


def _row(label, mem, extra=""):
    cells = " ".join(f"{mem[k] / MIB:10.1f}" for k in ("argument", "output", "temp", "peak"))
    return f"{label:28s} {cells}  {extra}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/bi_hs2s.py:demo")
    p.add_argument("--image_size", default="", help="HxW; default: the config's data.image_size")
    p.add_argument("--frames", default="5,10,20,40", help="whole-clip lengths T")
    p.add_argument("--window", type=int, default=10, help="clip_window W (0: no windowed rows)")
    p.add_argument("--overlap", type=int, default=2, help="clip_overlap O")
    p.add_argument("--videos", default="100,1000", help="video lengths for the windowed rows")
    p.add_argument("--objects", type=int, default=1, help="objects segmented together")
    p.add_argument("--scan_unroll", type=int, default=1, help="0: the config's model.scan_unroll")
    args = p.parse_args(argv)
    config = load_config(args.config)
    config.unlock()
    if args.scan_unroll:
        config.model.scan_unroll = args.scan_unroll
    size = args.image_size or "x".join(str(v) for v in config.data.image_size)
    image_size = tuple(int(v) for v in size.split("x"))
    model = models.build(config.model)
    variables = abstract_variables(model, image_size)
    n_params = sum(x.size for x in jax.tree.leaves(variables["params"]))
    print(f"command: python benchmarks/bi_hs2s_memory.py {' '.join(argv or sys.argv[1:])}")
    print(
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); {args.config} "
        f"({n_params / 1e6:.1f}M params), {image_size[0]}x{image_size[1]}, {args.objects} "
        f"object(s), {config.model.dtype}, scan_unroll {config.model.scan_unroll}; MiB"
    )
    print(f"{'predict_clip':28s} {'argument':>10s} {'output':>10s} {'temp':>10s} {'peak':>10s}")
    lengths = [int(v) for v in args.frames.split(",") if v]
    videos = [int(v) for v in args.videos.split(",") if v] if args.window else []
    whole = {}
    for t in sorted({*lengths, *videos}):
        t0 = time.perf_counter()
        whole[t] = clip_memory(model, variables, image_size, t, args.objects)
        if t in lengths:
            print(_row(f"whole clip T={t}", whole[t], f"compile {time.perf_counter() - t0:.0f} s"))
    if len(lengths) > 1:
        a, b = min(lengths), max(lengths)
        slope = (whole[b]["peak"] - whole[a]["peak"]) / (b - a) / MIB
        print(f"whole clip: {slope:.2f} MiB per frame (peak, T={a}..{b})")
    if args.window:
        predictors.clip_windows(args.window + 1, args.window, args.overlap)  # bad settings fail
        win = whole.get(args.window) or clip_memory(
            model, variables, image_size, args.window, args.objects
        )
        print(_row(f"window W={args.window} (any video)", win, f"overlap {args.overlap}"))
        for t in videos:
            n = len(predictors.clip_windows(t, args.window, args.overlap))
            print(
                f"video T={t}: windowed peak {win['peak'] / MIB:.1f} MiB in {n} windows; "
                f"whole clip {whole[t]['peak'] / MIB:.1f} MiB"
            )


if __name__ == "__main__":
    from rnn_vos_jax.runtime import compile_cache

    compile_cache.enable()  # $RNN_VOS_JAX_COMPILATION_CACHE or the user's cache; 'off' for cold
    main()

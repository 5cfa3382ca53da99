r"""Object-frames/s of streaming inference against the number of object slots (not a test).

    python benchmarks/slots.py [--config=hs2s:demo] [--image_size=H,W] [--slots=0,1,2,4,8]
        [--videos=8] [--frames=12] [--objects=1] [--dtype=float32]

Segments --videos in-memory videos of random frames (lengths --frames +- 50 %, --objects objects
each, all starting on the first frame, frames at the model's input size so host resizing is not
timed) with random weights of --config, one video at a time (slots 0: predictors.
StreamingPredictor, as evaluation with config.eval.object_slots=0) and with each slot count
(inference/slots.py). Each setting runs twice; the second run is timed (the first compiles).
Printed per setting: object-frames/s (objects stepped after their first frame, per second of
wall time) and the speed-up over the first setting (by default one video at a time). Run it on an otherwise idle machine.
"""

import argparse
import time

import jax
import numpy as np

from rnn_vos_jax import models
from rnn_vos_jax.inference import predictors, slots
from rnn_vos_jax.runtime.config_files import load_config


def _videos(n, frames, objects, size, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(max(2, frames // 2), frames + frames // 2 + 1))
        video = rng.integers(0, 256, (length, *size, 3), dtype=np.uint8)
        first = {}
        for o in range(1, objects + 1):
            mask = np.zeros(size, bool)
            y, x = rng.integers(0, size[0] // 2), rng.integers(0, size[1] // 2)
            mask[y : y + size[0] // 3, x : x + size[1] // 3] = True
            first[o] = (0, mask)
        out.append((video, first))
    return out


def _run(predictor, videos, num_slots) -> None:
    if num_slots == 0:
        for frames, first in videos:
            for _ in predictor.predict(frames, first):
                pass
        return
    runner = slots.SlotRunner(predictor, num_slots)
    for _ in runner.run(slots.SlotVideo(i, f, m) for i, (f, m) in enumerate(videos)):
        pass


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="hs2s:demo", help="configs/NAME.py[:ARG] as NAME:ARG")
    p.add_argument("--image_size", default="", help="H,W (default: the config's)")
    p.add_argument("--slots", default="0,1,2,4,8", help="slot counts; 0 = one video at a time")
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--objects", type=int, default=1)
    p.add_argument("--dtype", default="float32", help="the model's compute dtype")
    args = p.parse_args(argv)

    from rnn_vos_jax.runtime import compile_cache

    compile_cache.enable()
    name, _, arg = args.config.partition(":")
    config = load_config(f"configs/{name}.py" + (f":{arg}" if arg else ""))
    if args.image_size:
        config.data.image_size = tuple(int(x) for x in args.image_size.split(","))
    config.model.dtype = args.dtype
    size = tuple(config.data.image_size)
    model = models.build(config.model)
    variables = models.init_variables(model, jax.random.key(0), size)
    predictor = predictors.StreamingPredictor(model, variables, size)
    videos = _videos(args.videos, args.frames, args.objects, size)
    pairs = sum((len(f) - 1) * len(m) for f, m in videos)
    print(
        f"{args.config} at {size[0]}x{size[1]} ({args.dtype}) on {jax.devices()[0].device_kind}:"
        f" {len(videos)} videos, {args.objects} object(s) each, {pairs} object-frames"
    )
    base = None
    for num_slots in (int(s) for s in args.slots.split(",")):
        _run(predictor, videos, num_slots)  # compiles
        start = time.perf_counter()
        _run(predictor, videos, num_slots)
        rate = pairs / (time.perf_counter() - start)
        base = base or rate
        label = "one video at a time" if num_slots == 0 else f"{num_slots} slots"
        print(f"  {label:>20}: {rate:8.2f} object-frames/s  ({rate / base:.2f}x)", flush=True)


if __name__ == "__main__":
    main()

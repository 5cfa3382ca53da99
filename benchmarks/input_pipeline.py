"""Throughput of the training input pipeline (clips/s and frames/s), not a test.

    python benchmarks/input_pipeline.py [--cores=2 --batches=40 --warmup=5 --num_videos=16
        --batch_size=4 --repeats=2 --augment=recipe|fast --records=DIR --workdir=DIR]

Makes a synthetic dataset with 854x480 and 1280x720 videos (rnn_vos_jax/data/synthetic), converts
it to TFRecords (rnn_vos_jax/data/conversion) in a temporary folder (or uses --records), pins the
process to --cores CPU cores, builds the training pipeline at 256x448 with clip lengths
L ~ U{5..10} (the curriculum's end state, clips of L + 1 frames) and times --batches batches
after --warmup. `--augment=recipe` (default) is configs/common.py's data section as the recipes
train with it (the authors' augmentation: nearest affine after an antialiased resize);
`--augment=fast` the pixel/degree affine with one bilinear warp from the DCT-downscaled decode
(the setting of the 2026-11-21 figures). frames/s counts real (valid) frames. The CPU time per
clip and per frame is printed too, and from it the rate one idle host core gives (clips/s per
core = 1 / CPU seconds per clip): the machine may be shared, and docs/performance.md turns the
per-core rate into the host cores an accelerator needs.
"""

import argparse
import os
import resource
import tempfile
import time


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _make_records(workdir, num_videos):
    from rnn_vos_jax.data.conversion import convert
    from rnn_vos_jax.data.synthetic import generate

    splits = generate.make_dataset(
        os.path.join(workdir, "raw"),
        num_train=num_videos,
        num_valid=1,
        seed=0,
        frame_sizes=((480, 854), (720, 1280)),
        num_frames=(20, 40),
    )
    out = os.path.join(workdir, "records")
    convert.convert(splits["train"], out, num_shards=4)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--num_videos", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--augment", choices=("recipe", "fast"), default="recipe")
    parser.add_argument("--records", default="", help="existing TFRecord dir (skips creation)")
    parser.add_argument("--workdir", default="", help="where to make the dataset (default: temp)")
    args = parser.parse_args(argv)
    available = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, available[: args.cores])  # before TF sizes its thread pools

    from rnn_vos_jax.configs import common
    from rnn_vos_jax.data import pipeline

    with tempfile.TemporaryDirectory() as tmp:
        records = args.records or _make_records(args.workdir or tmp, args.num_videos)
        data = common.data_config(batch_size=args.batch_size, curriculum="none")
        data.train_records = records
        if args.augment == "fast":
            # One bilinear warp from the DCT-downscaled decode, not the authors' nearest affine
            # after an antialiased resize.
            data.affine_units = "pixels_degrees"
            data.frame_resample = "bilinear"
            data.antialias = False
        print(
            f"cores {sorted(os.sched_getaffinity(0))}, image_size {tuple(data.image_size)}, "
            f"batch {data.batch_size}, T {data.max_clip_len + 1}, augment {args.augment} "
            f"(affine {data.affine_units}, {data.frame_resample}, antialias {data.antialias}), "
            f"records {records}"
        )
        for repeat in range(args.repeats):
            it = pipeline.train_iterator(data, seed=repeat)
            for _ in range(args.warmup):
                next(it)
            frames = 0
            cpu0, t0 = _cpu_seconds(), time.perf_counter()
            for _ in range(args.batches):
                frames += int(next(it)["valid"].sum())
            wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
            it.close()
            clips = args.batches * data.batch_size
            print(
                f"run {repeat}: {clips / wall:.1f} clips/s, {frames / wall:.1f} frames/s, "
                f"{1000 * cpu / frames:.2f} cpu ms/frame, {cpu / clips:.3f} cpu s/clip "
                f"({clips / cpu:.2f} clips/s = {frames / cpu:.0f} frames/s per idle core), "
                f"load average {os.getloadavg()[0]:.1f}"
            )


if __name__ == "__main__":
    main()

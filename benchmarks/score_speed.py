"""Speed of `rnn_vos_jax.score` on real-size frames, one process against N, not a test.

    python benchmarks/score_speed.py [--videos=6 --frames=20 --workers=2 --size=480x854
        --repeats=3 --workdir=DIR]

Makes --videos synthetic videos of --frames frames at --size (DAVIS 480p by default) with 1-3
objects (rnn_vos_jax/data/synthetic), writes predictions (the ground truth shifted by 3 pixels with
1% of its pixels relabelled, so boundaries do not match), then scores the folder with
``folders.score_directory`` in this process (--workers=1) and with --workers processes, checks both
give the same metrics and prints the best wall time of --repeats runs, object-frames per second and,
for the single process, its CPU seconds per run (the machine may be shared: cpu_s / wall_s is the
share of a core it got; the workers' CPU time is not visible, they are the forkserver's children).
"""

import argparse
import json
import os
import resource
import tempfile
import time

import numpy as np


def _cpu_seconds():
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def _make_folders(workdir, videos, frames, size):
    from rnn_vos_jax.data import annotations
    from rnn_vos_jax.data.synthetic import generate

    split = generate.make_dataset(
        os.path.join(workdir, "raw"),
        num_train=1,
        num_valid=videos,
        seed=0,
        frame_sizes=(size,),
        num_frames=(frames, frames),
        num_objects=(1, 3),
    )["valid"]
    ann = os.path.join(split, "Annotations")
    pred = os.path.join(workdir, "pred")
    rng = np.random.default_rng(0)
    object_frames = 0
    for video in sorted(os.listdir(ann)):
        os.makedirs(os.path.join(pred, video), exist_ok=True)
        for name in sorted(os.listdir(os.path.join(ann, video))):
            ids = annotations.decode(os.path.join(ann, video, name))
            object_frames += len(set(np.unique(ids).tolist()) - {0})
            noisy = np.roll(ids, 3, axis=1)
            flip = rng.random(ids.shape) < 0.01
            noisy[flip] = rng.integers(0, ids.max() + 1, int(flip.sum()))
            annotations.write(os.path.join(pred, video, name), noisy.astype(np.uint8))
    return pred, ann, object_frames


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", default="480x854", help="HxW")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    from rnn_vos_jax.scoring import folders

    size = tuple(int(x) for x in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or tmp
        pred, ann, object_frames = _make_folders(workdir, args.videos, args.frames, size)
        rows, results = [], []
        for workers in (1, args.workers):
            walls, cpu = [], _cpu_seconds()
            for _ in range(args.repeats):
                start = time.perf_counter()
                result = folders.score_directory(pred, ann, workers=workers)
                walls.append(time.perf_counter() - start)
            results.append(result)
            rows.append(
                {
                    "workers": workers,
                    "wall_s": round(min(walls), 2),
                    "object_frames_per_s": round(object_frames / min(walls), 1),
                    "cpu_s": round((_cpu_seconds() - cpu) / args.repeats, 2)
                    if workers == 1
                    else None,
                }
            )
        if json.dumps(results[0], sort_keys=True) != json.dumps(results[1], sort_keys=True):
            raise AssertionError("the parallel scores differ from the single-process ones")
    print(
        json.dumps(
            {
                "size": args.size,
                "videos": args.videos,
                "frames": args.frames * args.videos,
                "object_frames": object_frames,
                "cpus": os.cpu_count(),
                "load_average": [round(x, 1) for x in os.getloadavg()],
                "runs": rows,
                "J&F": round(results[0]["JF_mean"], 4),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

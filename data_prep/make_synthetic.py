"""Synthetic VOS dataset in YouTube-VOS layout, deterministic for a seed.

    python data_prep/make_synthetic.py --output_dir=DIR [--num_train=8 --num_valid=4 --seed=0]
        [--frame_sizes=480x854,720x1280 --num_frames=10,40 --num_objects=1,4 --all_frames
         --overwrite]

Writes DIR/{train,valid}/JPEGImages/VIDEO/NNNNN.jpg, DIR/{train,valid}/Annotations/VIDEO/NNNNN.png
(DAVIS-palette PNGs of object ids, every frame annotated in both splits), DIR/{train,valid}/meta.json
(YouTube-VOS format; an object's `frames` are those where it is visible) and DIR/synthetic_info.json
(the parameters, written last: a rerun with the same parameters returns at once).

Frames are named every 5th (00000, 00005, ...) as in YouTube-VOS. With --all_frames valid is
rendered at the full frame rate, as YouTube-VOS's valid_all_frames: DIR/valid_all_frames/JPEGImages/
VIDEO/NNNNN.jpg holds every frame (00000, 00001, ...; the 4 after valid's last one too), valid every
5th of them (the same JPEG bytes), and objects may appear between two valid frames (their first
annotated frame is then the next valid one).

Each video: a panning textured background and 1-4 textured objects of a shape category that move,
scale and rotate, occlude each other, leave or enter the frame, some appearing after frame 0. The
categories in `unseen_categories` occur only in valid (seen/unseen split); every even-numbered valid
video starts with an unseen object, every odd-numbered one with a seen object.
"""

import argparse
import json

from rnn_vos_jax.data.synthetic.generate import make_dataset
from rnn_vos_jax.data.synthetic.scene import CONTRASTS


def _ints(text, sep):
    return tuple(int(x) for x in text.split(sep))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_train", type=int, default=8)
    parser.add_argument("--num_valid", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frame_sizes", default="480x854,720x1280", help="HxW,HxW,...")
    parser.add_argument("--num_frames", default="10,40", help="min,max frames per video")
    parser.add_argument("--num_objects", default="1,4", help="min,max objects per video")
    parser.add_argument("--contrast", default="natural", choices=sorted(CONTRASTS))
    parser.add_argument(
        "--all_frames", action="store_true", help="also write valid_all_frames (every frame)"
    )
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        sizes = [_ints(size, "x") for size in args.frame_sizes.split(",")]
        num_frames, num_objects = _ints(args.num_frames, ","), _ints(args.num_objects, ",")
        if any(len(x) != 2 for x in (*sizes, num_frames, num_objects)):
            raise ValueError("expected pairs")
    except ValueError as error:
        parser.error(f"--frame_sizes=HxW,... --num_frames=MIN,MAX --num_objects=MIN,MAX: {error}")
    splits = make_dataset(
        args.output_dir,
        args.num_train,
        args.num_valid,
        args.seed,
        frame_sizes=sizes,
        num_frames=num_frames,
        num_objects=num_objects,
        contrast=args.contrast,
        all_frames=args.all_frames,
        overwrite=args.overwrite,
    )
    print(json.dumps(splits))


if __name__ == "__main__":
    main()

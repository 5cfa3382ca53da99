r"""Segment your own video: a video file or frame folder + first-frame masks -> palette PNGs.

    python -m rnn_vos_jax.segment --config=configs/hs2s.py --checkpoint=PATH \
        --video=IN.mp4|FRAMES_DIR --masks=FIRST.png|MASKS_DIR --output=DIR \
        [--overlay=mp4|gif|none] [--overwrite] [--fps=F] [--config.KEY=VALUE ...]

    from rnn_vos_jax import api                      # the same, in a notebook
    result = api.segment_video("configs/hs2s.py", PATH, "IN.mp4", "FIRST.png", "DIR")

Writes DIR/Annotations/FRAME.png (DAVIS-palette PNGs of object ids at the original frame size),
DIR/overlay.mp4 (or overlay.gif: the masks blended in their palette colours, with contours) and,
last, DIR/segment.json (what was run, each object's first frame; its presence marks a finished
run). PATH is an orbax checkpoint (directory) or an authors' .pth.

The inputs it takes, what it refuses and when it reuses earlier results: inference/own_video.py.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rnn_vos_jax.inference import own_video, video_io

USAGE = (
    "python -m rnn_vos_jax.segment --config=CFG --checkpoint=PATH --video=IN.mp4|FRAMES_DIR "
    "--masks=FIRST.png|MASKS_DIR --output=DIR [--overlay=mp4|gif|none] [--overwrite] [--fps=F] "
    "[--noprogress] [--config.KEY=VALUE ...]"
)


def main(argv: Sequence[str] | None = None) -> own_video.SegmentResult:
    """The command line (argv[0] is the program name); exits with a one-line error on bad input."""
    from absl import flags
    from ml_collections import config_flags

    argv = list(sys.argv if argv is None else argv)
    fv = flags.FlagValues()  # its own flags: main can run in-process (tests, notebooks)
    config_flags.DEFINE_config_file(
        "config",
        None,
        "Config file [:arg], e.g. configs/hs2s.py; --config.KEY=VALUE overrides.",
        flag_values=fv,
        sys_argv=argv,  # where the --config.KEY overrides are looked up
    )
    flags.DEFINE_string(
        "checkpoint", None, "orbax checkpoint directory or authors' .pth", flag_values=fv
    )
    flags.DEFINE_string(
        "video", None, "video file (mp4, ...) or folder of JPEG/PNG frames", flag_values=fv
    )
    flags.DEFINE_string(
        "masks", None, "first-frame PNG, or folder of FRAME.png masks", flag_values=fv
    )
    flags.DEFINE_string("output", None, "output folder", flag_values=fv)
    flags.DEFINE_enum(
        "overlay", "mp4", list(video_io.OVERLAY_KINDS), "overlay video", flag_values=fv
    )
    flags.DEFINE_bool("overwrite", False, "replace earlier results in --output", flag_values=fv)
    flags.DEFINE_float("fps", None, "overlay frame rate (default: the video's)", flag_values=fv)
    flags.DEFINE_bool("progress", True, "progress bar on stderr", flag_values=fv)
    required = ["config", "checkpoint", "video", "masks", "output"]
    if {"--help", "-h", "--helpfull"} & set(argv[1:]):
        print(f"usage: {USAGE}\n\n{__doc__.splitlines()[0]}\n\n{fv.get_help()}")
        raise SystemExit(0)
    try:
        fv(argv)
        missing = [f"--{name}" for name in required if fv[name].value is None]
        if missing:
            raise flags.Error(f"missing {', '.join(missing)}")
    except flags.Error as error:
        raise SystemExit(f"segment: {error}\nusage: {USAGE}") from None
    try:
        result = own_video.segment_video(
            fv.config,
            fv.checkpoint,
            fv.video,
            fv.masks,
            fv.output,
            fv.overlay,
            overwrite=fv.overwrite,
            fps=fv.fps,
            show_progress=fv.progress,
        )
    except (FileNotFoundError, FileExistsError, ValueError, OSError) as error:
        raise SystemExit(f"segment: {error}") from None
    objects = ", ".join(f"{o} from frame {f}" for o, f in result.first_frames.items())
    print(f"{result.num_frames} frames, objects {objects}")
    print(f"masks:   {result.annotations}")
    if result.overlay:
        print(f"overlay: {result.overlay}")
    return result


if __name__ == "__main__":
    from rnn_vos_jax.runtime import host_memory

    host_memory.reexec_with_huge_pages()
    main()

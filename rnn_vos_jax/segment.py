r"""Segment your own video: a video file, frame folder or live stream + masks -> palette PNGs.

    python -m rnn_vos_jax.segment --config=configs/hs2s.py --checkpoint=PATH \
        --video=IN.mp4|FRAMES_DIR|-|rtsp://...|http://...|N --masks=FIRST.png|MASKS_DIR \
        --output=DIR [--overlay=mp4|gif|none] [--overwrite] [--fps=F] [--max_frames=N] \
        [--state_every=N] [--compilation_cache=DIR|off] [--config.KEY=VALUE ...]

    ffmpeg -f v4l2 -i /dev/video0 -pix_fmt yuv420p -f yuv4mpegpipe - | \
        python -m rnn_vos_jax.segment --video=- ...     # a camera through ffmpeg

    from rnn_vos_jax import api                      # the same, in a notebook
    result = api.segment_video("configs/hs2s.py", PATH, "IN.mp4", "FIRST.png", "DIR")

Writes DIR/Annotations/FRAME.png (DAVIS-palette PNGs of object ids at the original frame size),
DIR/overlay.mp4 (H.264; or overlay.gif) and, last, DIR/segment.json (what was run, each object's
first frame, the corrections used, where it resumed; its presence marks a finished run). PATH is
an orbax checkpoint (directory) or an authors' .pth. A later PNG of a tracked object in the masks
folder is a correction.

--video, --masks, --checkpoint and --output may also be gs:// (or other fsspec) URLs: the
results are written to the bucket as they are locally, and a stopped run resumes from its state
there.

Exit status: 0 when done; 1 on bad input or an error (a line names it); 74 when a write failed
for lack of space or permission (a line names the path); 143 / 130 when SIGTERM /
Ctrl-C stopped it after saving the tracking state in DIR/state: the same command run again goes
on from there (as does a rerun after a crash, from the last periodic save).

The inputs it takes, what it refuses, and when it reuses or resumes earlier results:
inference/own_video.py; stopping and resuming: inference/stream_run.py.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rnn_vos_jax.inference import overlay_video, own_video

USAGE = (
    "python -m rnn_vos_jax.segment --config=CFG --checkpoint=PATH "
    "--video=IN.mp4|FRAMES_DIR|-|URL|CAMERA --masks=FIRST.png|MASKS_DIR --output=DIR "
    "[--overlay=mp4|gif|none] [--overwrite] [--fps=F] [--max_frames=N] [--state_every=N] "
    "[--compilation_cache=DIR|off] [--noprogress] [--config.KEY=VALUE ...]"
)


def main(argv: Sequence[str] | None = None) -> own_video.SegmentResult:
    """The command line (argv[0] is the program name); exits with a one-line error on bad input."""
    from absl import flags

    from rnn_vos_jax.runtime import config_files

    argv = list(sys.argv if argv is None else argv)
    fv = config_files.model_flags(argv)
    video = "video file, frame folder, '-' (YUV4MPEG2 on stdin), rtsp/http URL or camera number"
    flags.DEFINE_string("video", None, video, flag_values=fv)
    masks = "first-frame PNG, or folder of FRAME.png masks (later ones: corrections)"
    flags.DEFINE_string("masks", None, masks, flag_values=fv)
    flags.DEFINE_string("output", None, "output folder", flag_values=fv)
    flags.DEFINE_enum(
        "overlay", "mp4", list(overlay_video.CHOICES), "overlay video", flag_values=fv
    )
    flags.DEFINE_bool("overwrite", False, "replace earlier results in --output", flag_values=fv)
    flags.DEFINE_float("fps", None, "overlay frame rate (default: the video's)", flag_values=fv)
    flags.DEFINE_bool("progress", True, "progress bar on stderr", flag_values=fv)
    flags.DEFINE_integer("max_frames", None, "stop after this many frames", flag_values=fv)
    every = "save the tracking state every this many frames (default: about every 10 s)"
    flags.DEFINE_integer("state_every", None, every, flag_values=fv)
    flags.DEFINE_string(
        "compilation_cache",
        None,
        "Folder of JAX's persistent compilation cache, or 'off' (default: "
        "$RNN_VOS_JAX_COMPILATION_CACHE, else ~/.cache/rnn_vos_jax/jax_compilation_cache).",
        flag_values=fv,
    )
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
    from rnn_vos_jax.runtime import compile_cache, storage

    compile_cache.enable(fv.compilation_cache)
    # A full disk or a refused write: one line naming the path, exit 74 (what finished stays).
    with storage.exit_on_storage_error():
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
                state_every=fv.state_every,
                max_frames=fv.max_frames,
            )
        except (FileNotFoundError, FileExistsError, ValueError, OSError) as error:
            if storage.is_fatal(error):
                raise
            raise SystemExit(f"segment: {error}") from None
    print(result.summary())
    return result


if __name__ == "__main__":
    from rnn_vos_jax.runtime import host_memory

    host_memory.reexec_with_huge_pages()
    main()

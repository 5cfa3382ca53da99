"""Checks predicted PNGs against what the YouTube-VOS server expects and zips them for upload.

    python -m rnn_vos_jax.submission --predictions=WORKDIR/eval/valid/Annotations \
        --meta=YTVOS/valid/meta.json --output=submission.zip [--valid_dir=YTVOS/valid]

Any of the paths may be a bucket URL (gs://...). What is checked, and the zip's layout:
scoring/submission.py. Every problem is listed at once,
and nothing is written unless there is none.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rnn_vos_jax.runtime import storage
from rnn_vos_jax.scoring import submission


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--predictions", required=True, help="folder of VIDEO/FRAME.png")
    parser.add_argument("--meta", required=True, help="the valid split's meta.json")
    parser.add_argument("--output", required=True, help="the zip to write")
    parser.add_argument(
        "--valid_dir",
        default=None,
        help="valid folder (JPEGImages/, Annotations/) for frames and sizes; default: meta's",
    )
    args = parser.parse_args(argv)
    # A full disk or a refused write: one line naming the path, exit 74.
    with storage.exit_on_storage_error():
        summary = submission.write_zip(args.predictions, args.meta, args.output, args.valid_dir)
    print(
        f"wrote {summary['output']}: {summary['frames']} frames of {summary['videos']} videos"
        + (f" ({summary['left_out']} other PNGs left out)" if summary["left_out"] else "")
    )
    return summary


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (FileNotFoundError, ValueError) as error:  # bad input: the message, not a traceback
        sys.exit(f"error: {error}")

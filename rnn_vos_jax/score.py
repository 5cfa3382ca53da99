"""Scores predicted palette PNGs against ground-truth PNGs (any method's, not only ours).

    python -m rnn_vos_jax.score --predictions=DIR --annotations=DIR [--meta=meta.json] \
        [--train_meta=FILE] [--output=FILE.json] [--include_first_last] [--ignore_void] \
        [--baseline] [--csv_dir=DIR [--set=val]] [--workers=N]

Both folders hold ``VIDEO/FRAME.png`` id maps (scoring/folders.py says how they are read); any
path may be a bucket URL (gs://...). Void pixels (255) of the ground truth are background, as in the
DAVIS toolkit's semi-supervised driver; ``--ignore_void`` leaves them out of both masks instead.
``--train_meta`` (a YouTube-VOS meta.json or a converted split's dataset_info.json) gives the
seen categories for the seen/unseen split. Prints J, F, J&F with the toolkit's recall and decay and
writes the metrics JSON of ``metrics.summarize``; ``--csv_dir`` also writes the toolkit's
``global_results-<set>.csv`` and ``per-sequence_results-<set>.csv`` (rows ``VIDEO_OBJ``), with the
numbers the toolkit's ``evaluation_method.py`` writes for the same folders. ``--workers=N``
scores videos in N processes (0: one per CPU). A run that scores no object is an error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rnn_vos_jax.runtime import atomic, storage
from rnn_vos_jax.scoring import folders, metrics, toolkit_csv


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--predictions", required=True, help="folder of VIDEO/FRAME.png predictions"
    )
    parser.add_argument(
        "--annotations", required=True, help="folder of VIDEO/FRAME.png ground truth"
    )
    parser.add_argument("--meta", default=None, help="YouTube-VOS meta.json of the scored split")
    parser.add_argument("--train_meta", default=None, help="train meta.json / dataset_info.json")
    parser.add_argument("--output", default=None, help="where to write the metrics JSON")
    parser.add_argument(
        "--include_first_last", action="store_true", help="also score first and last frames"
    )
    parser.add_argument(
        "--ignore_void",
        action="store_true",
        help="leave void (255) pixels out of both masks (default: background, as the DAVIS "
        "toolkit's semi-supervised driver counts them)",
    )
    parser.add_argument("--baseline", action="store_true", help="also score copy-the-first-mask")
    parser.add_argument(
        "--csv_dir", default=None, help="also write the DAVIS toolkit's two CSV tables here"
    )
    parser.add_argument("--set", default="val", help="set name in the CSV file names")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes scoring in parallel (0: one per CPU)"
    )
    args = parser.parse_args(argv)
    # A full disk or a refused write: one line naming the path, exit 74.
    with storage.exit_on_storage_error():
        result = folders.score_directory(
            args.predictions,
            args.annotations,
            args.meta,
            train_meta=args.train_meta,
            include_first_last=args.include_first_last,
            ignore_void=args.ignore_void,
            baseline=args.baseline,
            workers=args.workers,
        )
        print(metrics.format_table(result))
        if args.output:
            atomic.write_json(args.output, result)
        if args.csv_dir:
            for path in toolkit_csv.write_toolkit_csvs(result, args.csv_dir, args.set):
                print(f"wrote {path}")
    return result


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (FileNotFoundError, ValueError) as error:  # bad input: the message, not a traceback
        sys.exit(f"error: {error}")

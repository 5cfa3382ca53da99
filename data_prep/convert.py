"""Converts a raw YouTube-VOS split folder or DAVIS root to TFRecord shards + dataset_info.json.

    python data_prep/convert.py --input_dir=DIR/train --output_dir=OUT [--num_shards=64
        --workers=1 --on_error=raise|skip --davis_set=val --year=2017]
    python data_prep/convert.py --verify=OUT

One tf.train.Example per video (rnn_vos_jax/data/record_schema.py). Video i of the sorted names goes to
shard i % num_shards, so the assignment never depends on timing. OUT may be local or a bucket
(gs://...). Each shard is written whole and atomically (a renamed temporary file, or one object
upload); then OUT/.convert_state/<shard>.json records its plan, size and sha256. A rerun keeps
every shard whose state matches the plan (its videos; names, sizes and mtimes of their input
files), size and checksum and converts only the others, so an interrupted conversion resumes to
byte-identical shards; shards that skipped a bad video are always redone. Bad input raises an
error naming the file (on_error='raise') or skips the video and lists it in dataset_info.json and
on stdout (on_error='skip'). dataset_info.json is written last (per shard: records, bytes,
sha256); one output folder per split.

--verify=OUT checks every shard dataset_info.json lists (exists, size, sha256, each record's
checksums, record count), prints one line per damaged shard and a summary, and exits 1 when any
is damaged (0 when all are intact).
"""

import argparse
import sys

from rnn_vos_jax.data.conversion.convert import ON_ERROR, convert
from rnn_vos_jax.data.conversion.verify import verify
from rnn_vos_jax.data.conversion.video_record import BadInputError
from rnn_vos_jax.runtime import storage


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input_dir")
    parser.add_argument("--output_dir")
    parser.add_argument("--verify", metavar="OUT", help="check a converted split and exit")
    parser.add_argument("--num_shards", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--on_error", choices=ON_ERROR, default="raise")
    parser.add_argument("--davis_set", default="val")
    parser.add_argument("--year", default=None)
    parser.add_argument("--split", default=None, help="default: input folder name / davis_set")
    args = parser.parse_args(argv)
    if args.verify:
        sys.exit(0 if verify(args.verify) else 1)
    if not (args.input_dir and args.output_dir):
        parser.error("--input_dir and --output_dir are required (or --verify=OUT)")
    try:
        with storage.exit_on_storage_error():
            convert(
                args.input_dir,
                args.output_dir,
                args.num_shards,
                args.workers,
                args.on_error,
                davis_set=args.davis_set,
                year=args.year,
                split=args.split,
            )
    except BadInputError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()

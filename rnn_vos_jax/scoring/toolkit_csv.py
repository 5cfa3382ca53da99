"""The DAVIS toolkit's two result tables (its evaluation_method.py), from a metrics JSON."""

from __future__ import annotations

import csv
import io

from rnn_vos_jax.runtime import atomic, storage

# The DAVIS toolkit's CSV columns (evaluation_method.py) and the metrics-JSON keys they hold.
GLOBAL_COLUMNS = {
    "J&F-Mean": "JF_mean",
    "J-Mean": "J_mean",
    "J-Recall": "J_recall",
    "J-Decay": "J_decay",
    "F-Mean": "F_mean",
    "F-Recall": "F_recall",
    "F-Decay": "F_decay",
}
SEQUENCE_COLUMNS = ("Sequence", "J-Mean", "F-Mean")


def write_toolkit_csvs(result: dict, csv_dir: str, set_name: str = "val") -> tuple[str, str]:
    """Writes the DAVIS toolkit's two result tables for a ``metrics.summarize`` result.

    ``global_results-<set>.csv``: one row of GLOBAL_COLUMNS (means over objects);
    ``per-sequence_results-<set>.csv``: ``Sequence,J-Mean,F-Mean``, one row per scored object
    named ``VIDEO_OBJ``, videos in name order and objects by id. Numbers as the toolkit writes
    them (three decimals, as fractions).

    Returns:
      (global path, per-sequence path).
    """
    storage.makedirs(csv_dir)
    paths = (
        storage.join(csv_dir, f"global_results-{set_name}.csv"),
        storage.join(csv_dir, f"per-sequence_results-{set_name}.csv"),
    )
    objects = sorted(
        (key.rsplit("/", 1) for key in result["per_object"]), key=lambda vo: (vo[0], int(vo[1]))
    )
    rows = [
        [list(GLOBAL_COLUMNS), [f"{result[k]:.3f}" for k in GLOBAL_COLUMNS.values()]],
        [list(SEQUENCE_COLUMNS)]
        + [
            [f"{video}_{obj}", f"{o['J']:.3f}", f"{o['F']:.3f}"]
            for video, obj in objects
            for o in [result["per_object"][f"{video}/{obj}"]]
        ],
    ]
    for path, table in zip(paths, rows):
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(table)
        atomic.write_text(path, text.getvalue())
    return paths

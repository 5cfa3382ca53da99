"""Raw YouTube-VOS split folder or DAVIS root -> TFRecord shards + dataset_info.json (`convert`).

The command is data_prep/convert.py (its docstring gives the output and the resume rule).
"""

import collections
import functools
import hashlib
import json
import multiprocessing
import os
import re

from rnn_vos_jax.data import record_io, record_schema, vos_reader
from rnn_vos_jax.data.conversion import shard_writer, video_record
from rnn_vos_jax.runtime import storage

STATE_DIR = ".convert_state"
ON_ERROR = ("raise", "skip")
# Temporary files of an interrupted shard write (storage.staged_output's, older converters').
_TEMPORARY = re.compile(r"\.tmp-?\d+")


def _write_json(path: str, obj) -> None:
    """JSON as runtime.atomic writes it, through storage (atomic locally and on gs://)."""
    storage.write_text(path, json.dumps(obj, indent=1, sort_keys=True))


def _state_path(output_dir: str, shard_file: str) -> str:
    return storage.join(output_dir, STATE_DIR, shard_file + ".json")


def _shard_done(output_dir: str, plan: dict) -> dict | None:
    """The saved state of a finished shard matching `plan`, its size and checksum, else None."""
    path = storage.join(output_dir, plan["file"])
    try:
        state = json.loads(storage.read_text(_state_path(output_dir, plan["file"])))
    except (OSError, ValueError):
        return None
    if state.get("plan") != plan or state.get("skipped") or not storage.exists(path):
        return None  # shards with skipped videos are redone: the input may have been fixed
    if "bytes" not in state or storage.size(path) != state["bytes"]:
        return None  # also states of converters before dataset_info.json had records/bytes
    if record_io.file_sha256(path) != state.get("sha256"):
        return None
    return state


def _fingerprint(reader: vos_reader.VOSReader, names: list[str]) -> str:
    """Digest of the names, sizes and mtimes of the input files of `names` (and meta.json).

    Part of a shard's plan, so a finished shard is redone when its input files change. For input
    in a bucket only the names count (a size and time would cost a request per file).
    """
    digest = hashlib.sha256()
    folders = [reader.meta_path] if reader.meta_path else []
    for name in names:
        folders += [storage.dirname(reader.frame_path(name, "x"))]
        folders += [storage.dirname(reader.annotation_path(name, "x"))]
    for folder in folders:
        # Local sizes and mtimes come from one scandir a folder (storage has no listing with them).
        if storage.is_remote(folder):
            entries = storage.listdir(folder) if storage.isdir(folder) else [folder]
        elif os.path.isfile(folder):
            st = os.stat(folder)
            entries = [f"{os.path.basename(folder)}:{st.st_size}:{st.st_mtime_ns}"]
        elif os.path.isdir(folder):
            found = sorted(os.scandir(folder), key=lambda e: e.name)
            entries = [f"{e.name}:{e.stat().st_size}:{e.stat().st_mtime_ns}" for e in found]
        else:
            entries = []
        digest.update(f"{folder}\n".encode())
        for entry in entries:
            digest.update(f"{entry}\n".encode())
    return digest.hexdigest()


def _convert_shard(plan: dict, on_error: str) -> dict:
    """Converts the videos of one shard; returns (and saves) the shard's state."""
    reader = vos_reader.VOSReader(plan["source"], plan["davis_set"], plan["year"])
    examples, skipped = [], []
    num_objects = num_frames = 0
    categories = collections.Counter()
    for name in plan["videos"]:
        try:
            record = video_record.load_video(reader, name, plan["dense"])
        except video_record.BadInputError as error:
            if on_error == "raise":
                raise
            skipped.append({"video": name, "error": str(error)})
            print(f"skipped {name}: {error}", flush=True)
            continue
        examples.append(shard_writer.serialize(record))
        num_objects += len(record.object_ids)
        num_frames += len(record.frame_names)
        categories.update(record.category_counts())
    written = shard_writer.write_shard(storage.join(plan["output_dir"], plan["file"]), examples)
    state = {
        "plan": plan,
        "file": plan["file"],
        "sha256": written["sha256"],
        "records": written["records"],
        "bytes": written["bytes"],
        "num_videos": len(examples),
        "num_objects": num_objects,
        "num_frames": num_frames,
        "categories": dict(sorted(categories.items())),
        "skipped": skipped,
    }
    _write_json(_state_path(plan["output_dir"], plan["file"]), state)
    return state


def _remove_stale(output_dir: str, split: str, keep: set[str]) -> None:
    """Deletes temporary files and shards of an earlier plan (other shard count) for `split`."""
    pattern = re.compile(
        re.escape(split) + r"-\d{5}-of-\d{5}" + re.escape(record_schema.SHARD_SUFFIX)
    )
    for base in storage.listdir(output_dir) if storage.exists(output_dir) else []:
        stale_shard = pattern.fullmatch(base) and base not in keep
        if stale_shard or _TEMPORARY.search(base):
            path = storage.join(output_dir, base)
            print(f"removing stale {path}", flush=True)
            storage.remove(path)


def convert(
    input_dir: str,
    output_dir: str,
    num_shards: int = 64,
    workers: int = 1,
    on_error: str = "raise",
    *,
    davis_set: str = "val",
    year: str | int | None = None,
    dense: bool | None = None,
    split: str | None = None,
) -> dict:
    """Converts a raw VOS folder to TFRecord shards; resumes an interrupted run.

    Args:
      input_dir: a YouTube-VOS split folder (JPEGImages/, Annotations/, meta.json) or a DAVIS root.
      output_dir: where shards, dataset_info.json and .convert_state/ go (local or gs://...).
      num_shards: number of shards (capped at the number of videos).
      workers: parallel processes (1 = in this process).
      on_error: 'raise' stops at the first bad video with an error naming the file; 'skip'
        converts the rest and lists the skipped videos.
      davis_set, year: DAVIS image set and year (ignored for YouTube-VOS).
      dense: require PNGs on every frame listed for an object; None = all but YouTube-VOS
        valid/test, whose PNGs exist only where an object first appears.
      split: name of the split in shard names and dataset_info.json; None = the reader's
        (YouTube-VOS: the input folder's name, DAVIS: davis_set).

    Returns:
      The dataset_info dict also written to OUT/dataset_info.json.

    Raises:
      video_record.BadInputError: bad input with on_error='raise' (finished shards are kept).
      ValueError: bad arguments or no videos.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if num_shards < 1 or workers < 1:
        raise ValueError(f"num_shards and workers must be >= 1, got {num_shards}, {workers}")
    reader = vos_reader.VOSReader(input_dir, davis_set, year)
    names = reader.video_names()
    if not names:
        raise ValueError(f"no videos found in {input_dir}")
    num_shards = min(num_shards, len(names))
    split = split or reader.split
    if not re.fullmatch(r"[\w.-]+", split):
        raise ValueError(f"split name {split!r} must be letters, digits, '_', '-' or '.'")
    storage.makedirs(storage.join(output_dir, STATE_DIR))
    plans = [
        {
            "source": storage.absolute(input_dir),
            "output_dir": storage.absolute(output_dir),
            "layout": reader.layout,
            "davis_set": davis_set,
            "year": reader.year,
            "dense": video_record.is_dense(reader) if dense is None else dense,
            "file": record_schema.shard_name(split, i, num_shards),
            "videos": names[i::num_shards],
            "fingerprint": _fingerprint(reader, names[i::num_shards]),
        }
        for i in range(num_shards)
    ]
    info_path = storage.join(output_dir, record_schema.DATASET_INFO)
    storage.remove(info_path)  # rewritten at the end: its absence marks an unfinished run
    _remove_stale(output_dir, split, {plan["file"] for plan in plans})
    states = {}
    for plan in plans:
        state = _shard_done(output_dir, plan)
        if state is not None:
            states[plan["file"]] = state
    todo = [plan for plan in plans if plan["file"] not in states]
    if states:
        print(f"resuming: {len(states)} of {num_shards} shards already done", flush=True)
    work = functools.partial(_convert_shard, on_error=on_error)
    if workers == 1 or len(todo) <= 1:
        results = map(work, todo)
        pool = None
    else:  # spawn: forking a process that has TensorFlow or JAX loaded can deadlock
        pool = multiprocessing.get_context("spawn").Pool(min(workers, len(todo)))
        results = pool.imap_unordered(work, todo)
    try:
        for state in results:
            states[state["file"]] = state
            print(f"wrote {state['file']}: {state['num_videos']} videos", flush=True)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    ordered = [states[plan["file"]] for plan in plans]
    categories = collections.Counter()
    for state in ordered:
        categories.update(state["categories"])
    info = {
        "split": split,
        "layout": reader.layout,
        "source": storage.absolute(input_dir),
        "year": reader.year,
        "num_videos": sum(s["num_videos"] for s in ordered),
        "num_objects": sum(s["num_objects"] for s in ordered),
        "num_frames": sum(s["num_frames"] for s in ordered),
        "num_shards": num_shards,
        "shards": [
            {k: s[k] for k in ("file", "num_videos", "records", "bytes", "sha256")} for s in ordered
        ],
        "categories": dict(sorted(categories.items())),
        "skipped": sorted((v for s in ordered for v in s["skipped"]), key=lambda v: v["video"]),
    }
    _write_json(info_path, info)
    for item in info["skipped"]:
        print(f"SKIPPED {item['video']}: {item['error']}")
    print(
        f"converted {info['num_videos']} videos ({info['num_frames']} frames, "
        f"{info['num_objects']} objects) into {num_shards} shards in {output_dir}; "
        f"skipped {len(info['skipped'])}",
        flush=True,
    )
    return info

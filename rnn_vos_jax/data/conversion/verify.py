"""Checks a converted split (`python data_prep/convert.py --verify=DIR`), local or gs://.

Every shard that dataset_info.json lists must exist and have the size, sha256 and record count
written there, and every record's checksums must hold (record_io). A folder without
dataset_info.json has its *.tfrecord files checked for readable records only. No TensorFlow.
"""

import json

from rnn_vos_jax.data import record_io, record_schema
from rnn_vos_jax.runtime import storage


def _expected(directory: str) -> list[dict]:
    """The shards to check: dataset_info.json's entries, else one {"file"} per *.tfrecord."""
    info_path = storage.join(directory, record_schema.DATASET_INFO)
    if storage.exists(info_path):
        return json.loads(storage.read_text(info_path))["shards"]
    pattern = storage.join(directory, "*" + record_schema.SHARD_SUFFIX)
    return [{"file": storage.basename(p)} for p in storage.glob(pattern)]


def shard_problems(path: str, expected: dict) -> list[str]:
    """What is wrong with one shard ([] when intact); `expected` holds the dataset_info.json
    fields it is checked against (records, bytes, sha256; those absent are not checked)."""
    if not storage.exists(path):
        return ["missing"]
    found = record_io.check_file(path)
    problems = [f"record {e.index} at byte {e.offset}: {e.cause}" for e in found["damage"]]
    if "bytes" in expected and found["bytes"] != expected["bytes"]:
        problems.append(f"{found['bytes']} bytes, dataset_info.json says {expected['bytes']}")
    if "sha256" in expected and found["sha256"] != expected["sha256"]:
        problems.append("sha256 differs from dataset_info.json")
    count = expected.get("records", expected.get("num_videos"))
    if count is not None and found["records"] != count:
        problems.append(f"{found['records']} intact records, dataset_info.json says {count}")
    return problems


def verify(directory: str, out=print) -> bool:
    """Checks every shard of `directory`; prints one line per damaged shard and a summary.

    Returns:
        True when every shard is intact (and there is at least one).
    """
    shards = _expected(directory)
    damaged = 0
    for shard in shards:
        path = storage.join(directory, shard["file"])
        problems = shard_problems(path, shard)
        if problems:
            damaged += 1
            out(f"DAMAGED {path}: {'; '.join(problems)}")
    if not shards:
        out(f"no shards found in {directory}")
        return False
    out(f"verified {len(shards)} shards in {directory}: {damaged} damaged")
    return damaged == 0

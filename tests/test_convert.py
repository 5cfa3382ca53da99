"""Raw folder -> TFRecord conversion: round trip, resume, workers, strict errors and skip mode."""

import hashlib
import io
import json
import os
import re
import runpy
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from rnn_vos_jax.data import annotations, vos_reader
from rnn_vos_jax.data import record_schema as rs
from rnn_vos_jax.data.conversion import convert, video_record

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli_main(argv):
    """The main() of the command `python data_prep/convert.py`, run in this process."""
    return runpy.run_path(os.path.join(REPO, "data_prep", "convert.py"))["main"](argv)


@pytest.fixture(scope="module")
def reference(synthetic, tmp_path_factory):
    """An uninterrupted conversion of train into 3 shards (the shared records have 2)."""
    out = str(tmp_path_factory.mktemp("reference"))
    info = convert.convert(synthetic.train, out, num_shards=3)
    return out, info


def _shards(out):
    with open(os.path.join(out, rs.DATASET_INFO)) as f:
        info = json.load(f)
    return {s["file"]: _read(os.path.join(out, s["file"])) for s in info["shards"]}


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _parse(out):
    """Every record of the shards in `out`, parsed with the schema, by video name."""
    with open(os.path.join(out, rs.DATASET_INFO)) as f:
        info = json.load(f)
    records = {}
    for shard in info["shards"]:
        for serialized in tf.data.TFRecordDataset(os.path.join(out, shard["file"])):
            ex = tf.io.parse_single_example(serialized, rs.tf_feature_spec(tf))
            ex = {k: v.numpy() for k, v in ex.items()}
            ex["shard"] = shard["file"]
            records[ex[rs.VIDEO].decode()] = ex
    return records


def _pil(data, mode=None):
    with Image.open(io.BytesIO(data)) as image:
        return np.array(image.convert(mode) if mode else image)


def _meta(split_dir):
    with open(os.path.join(split_dir, "meta.json")) as f:
        return json.load(f)["videos"]


def test_round_trip_same_pixels_and_ids(synthetic, reference):
    out, info = reference
    split_dir = synthetic.train
    reader = vos_reader.VOSReader(split_dir)
    meta = _meta(split_dir)
    records = _parse(out)
    names = reader.video_names()
    assert sorted(records) == names
    assert info["split"] == "train" and info["layout"] == "youtube_vos"
    assert info["num_videos"] == len(meta) == synthetic.options["num_train"]
    assert info["num_shards"] == 3 and info["skipped"] == []
    assert info["num_objects"] == sum(len(v["objects"]) for v in meta.values())
    assert info["num_frames"] == sum(len(reader.video(n).frames) for n in names)
    cats = [o["category"] for v in meta.values() for o in v["objects"].values()]
    assert info["categories"] == {c: cats.count(c) for c in set(cats)}
    for i, shard in enumerate(info["shards"]):
        assert shard["file"] == f"train-{i:05d}-of-00003.tfrecord"
        assert shard["num_videos"] == len(names[i::3])
        with open(os.path.join(out, shard["file"]), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == shard["sha256"]
    for i, name in enumerate(names):
        ex, video = records[name], reader.video(name)
        assert ex["shard"] == info["shards"][i % 3]["file"]  # video i -> shard i % n
        assert (ex[rs.HEIGHT], ex[rs.WIDTH]) == (video.height, video.width)
        assert [f.decode() for f in ex[rs.FRAME_NAMES]] == video.frames
        ids = sorted(int(k) for k in meta[name]["objects"])
        assert ex[rs.OBJECT_IDS].tolist() == ids
        assert [c.decode() for c in ex[rs.CATEGORIES]] == [
            meta[name]["objects"][str(k)]["category"] for k in ids
        ]
        listed = ex[rs.OBJECT_FRAMES].reshape(len(ids), len(video.frames))
        for k, obj_id in enumerate(ids):
            frames = meta[name]["objects"][str(obj_id)]["frames"]
            assert listed[k].tolist() == [int(f in frames) for f in video.frames]
        for n, frame in enumerate(video.frames):
            with open(reader.frame_path(name, frame), "rb") as f:
                assert ex[rs.JPEG][n] == f.read()  # bytes kept as they are
            np.testing.assert_array_equal(
                _pil(ex[rs.JPEG][n], "RGB"), reader.read_frame(name, frame)
            )
            # TF decodes like PIL with the accurate integer DCT
            decoded = tf.io.decode_jpeg(ex[rs.JPEG][n], dct_method="INTEGER_ACCURATE").numpy()
            np.testing.assert_array_equal(decoded, reader.read_frame(name, frame))
            with open(reader.annotation_path(name, frame), "rb") as f:
                assert ex[rs.PNG][n] == f.read()
            np.testing.assert_array_equal(_pil(ex[rs.PNG][n]), reader.read_annotation(name, frame))


def _sparse_valid(src, dst):
    """YouTube-VOS valid style: PNGs only where objects first appear, holding only those."""
    shutil.copytree(src, dst)
    for video, entry in _meta(dst).items():
        firsts = {}
        for obj_id, obj in entry["objects"].items():
            firsts.setdefault(obj["frames"][0], []).append(int(obj_id))
        for name in os.listdir(os.path.join(dst, "Annotations", video)):
            path = os.path.join(dst, "Annotations", video, name)
            if name[:-4] not in firsts:
                os.remove(path)
            else:
                ids = _pil(_read(path))
                ids[~np.isin(ids, firsts[name[:-4]])] = 0
                Image.fromarray(ids).save(path)  # greyscale PNG of ids is accepted unchanged
    return dst


def test_valid_style_sparse_annotations(synthetic, tmp_path):
    split_dir = _sparse_valid(synthetic.valid, str(tmp_path / "valid"))
    out = str(tmp_path / "out")
    info = convert.convert(split_dir, out, num_shards=1)
    assert info["split"] == "valid" and info["num_videos"] == synthetic.options["num_valid"]
    reader = vos_reader.VOSReader(split_dir)
    for name, ex in _parse(out).items():
        video = reader.video(name)
        for n, frame in enumerate(video.frames):
            if frame in video.annotated:
                with open(reader.annotation_path(name, frame), "rb") as f:
                    assert ex[rs.PNG][n] == f.read()
            else:
                assert ex[rs.PNG][n] == b""
        assert ex[rs.OBJECT_FRAMES].sum() == sum(len(o.frames) for o in video.objects.values())


def test_davis_2016_masks_are_reencoded_as_ids(synthetic, tmp_path):
    root = str(tmp_path / "davis")
    for sub in ("JPEGImages", "Annotations"):
        shutil.copytree(os.path.join(synthetic.train, sub), os.path.join(root, sub, "480p"))
    names = sorted(_meta(synthetic.train))[:2]
    os.makedirs(os.path.join(root, "ImageSets", "2016"))
    with open(os.path.join(root, "ImageSets", "2016", "val.txt"), "w") as f:
        f.write("\n".join(names))
    for name in names:
        folder = os.path.join(root, "Annotations", "480p", name)
        for png in os.listdir(folder):
            ids = _pil(_read(os.path.join(folder, png)))
            Image.fromarray((ids > 0).astype(np.uint8) * 255).save(os.path.join(folder, png))
    out = str(tmp_path / "out")
    info = convert.convert(root, out, num_shards=2)
    assert (info["split"], info["layout"], info["year"]) == ("val", "davis", "2016")
    assert info["categories"] == {} and info["num_objects"] == 2
    reader = vos_reader.VOSReader(root)
    for name, ex in _parse(out).items():
        assert ex[rs.OBJECT_IDS].tolist() == [1] and ex[rs.CATEGORIES].tolist() == [b""]
        found = set()
        for n, frame in enumerate(reader.video(name).frames):
            ids = _pil(ex[rs.PNG][n])
            np.testing.assert_array_equal(ids, reader.read_annotation(name, frame))
            found |= set(np.unique(ids).tolist())
            raw = _read(reader.annotation_path(name, frame))
            assert (ex[rs.PNG][n] == raw) == (_pil(raw).max() == 0)  # 0/255 files re-encoded
        assert found == {0, 1}


def test_resume_after_crash_with_workers_gives_identical_shards(
    synthetic, reference, tmp_path, monkeypatch
):
    ref_out, ref_info = reference
    out = str(tmp_path / "out")
    original = convert._convert_shard
    calls = []

    def crash_on_second(plan, on_error):
        calls.append(plan["file"])
        if len(calls) == 2:  # half-written temporary file, then the process dies
            with open(os.path.join(out, plan["file"] + ".tmp-4242"), "wb") as f:
                f.write(b"partial")
            raise RuntimeError("simulated crash")
        return original(plan, on_error)

    monkeypatch.setattr(convert, "_convert_shard", crash_on_second)
    with pytest.raises(RuntimeError, match="simulated crash"):
        convert.convert(synthetic.train, out, num_shards=3)
    assert sorted(f for f in os.listdir(out) if f.endswith(".tfrecord")) == [calls[0]]
    assert not os.path.exists(os.path.join(out, rs.DATASET_INFO))
    kept = os.stat(os.path.join(out, calls[0]))
    monkeypatch.setattr(convert, "_convert_shard", original)
    # the rerun converts the two missing shards in two spawned worker processes
    info = convert.convert(synthetic.train, out, num_shards=3, workers=2)
    again = os.stat(os.path.join(out, calls[0]))
    assert (again.st_ino, again.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)
    assert _shards(out) == _shards(ref_out)
    assert info == ref_info
    assert not [f for f in os.listdir(out) if ".tmp-" in f]
    # a damaged finished shard fails its checksum and is rewritten; the others are kept
    with open(os.path.join(out, ref_info["shards"][2]["file"]), "r+b") as f:
        f.seek(40)
        f.write(b"X")
    calls.clear()
    monkeypatch.setattr(
        convert,
        "_convert_shard",
        lambda plan, on_error: calls.append(plan) or original(plan, on_error),
    )
    convert.convert(synthetic.train, out, num_shards=3)
    assert [p["file"] for p in calls] == [ref_info["shards"][2]["file"]]
    assert _shards(out) == _shards(ref_out)
    # another shard count replaces the old shards
    info = convert.convert(synthetic.train, out, num_shards=2)
    assert sorted(f for f in os.listdir(out) if f.endswith(".tfrecord")) == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
    ]
    assert info["num_videos"] == synthetic.options["num_train"]


def _first(split_dir):
    meta = _meta(split_dir)
    name = min(meta)
    frames = sorted(f[:-4] for f in os.listdir(os.path.join(split_dir, "JPEGImages", name)))
    return meta, name, frames


def _jpeg_path(d, name, frame):
    return os.path.join(d, "JPEGImages", name, frame + ".jpg")


def _png_path(d, name, frame):
    return os.path.join(d, "Annotations", name, frame + ".png")


def _garbage_jpeg(d, meta, name, frames):
    with open(_jpeg_path(d, name, frames[1]), "wb") as f:
        f.write(b"this is not a jpeg")
    return _jpeg_path(d, name, frames[1])


def _garbage_png(d, meta, name, frames):
    with open(_png_path(d, name, frames[0]), "wb") as f:
        f.write(b"this is not a png")
    return _png_path(d, name, frames[0])


def _truncated_jpeg(d, meta, name, frames):
    path = _jpeg_path(d, name, frames[1])
    data = _read(path)
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    return path


def _other_size(d, meta, name, frames):
    Image.new("RGB", (20, 10)).save(_jpeg_path(d, name, frames[-1]))
    return _jpeg_path(d, name, frames[-1])


def _missing_listed_png(d, meta, name, frames):
    obj = meta[name]["objects"]["1"]["frames"]
    os.remove(_png_path(d, name, obj[-1]))
    return _png_path(d, name, obj[-1])


def _missing_first_png(d, meta, name, frames):
    first = meta[name]["objects"]["1"]["frames"][0]
    os.remove(_png_path(d, name, first))
    return _png_path(d, name, first)


def _unknown_id(d, meta, name, frames):
    path = _png_path(d, name, frames[0])
    ids = _pil(_read(path))
    ids[0, 0] = 7
    with open(path, "wb") as f:
        f.write(annotations.encode(ids))
    return path


def _absent_from_first(d, meta, name, frames):
    first = meta[name]["objects"]["1"]["frames"][0]
    path = _png_path(d, name, first)
    ids = _pil(_read(path))
    ids[ids == 1] = 0
    with open(path, "wb") as f:
        f.write(annotations.encode(ids))
    return path


def _listed_frame_without_jpeg(d, meta, name, frames):
    meta[name]["objects"]["1"]["frames"].append("00995")
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump({"videos": meta}, f)
    return _jpeg_path(d, name, "00995")


def _video_without_jpegs(d, meta, name, frames):
    shutil.rmtree(os.path.join(d, "JPEGImages", name))
    return os.path.join(d, "JPEGImages", name)


def _png_without_jpeg(d, meta, name, frames):
    shutil.copy(_png_path(d, name, frames[0]), _png_path(d, name, "00995"))
    return _png_path(d, name, "00995")


@pytest.mark.parametrize(
    "breaker, dense",
    [
        (_garbage_jpeg, None),
        (_truncated_jpeg, None),
        (_garbage_png, None),
        (_other_size, None),
        (_missing_listed_png, None),
        (_missing_first_png, False),
        (_unknown_id, None),
        (_absent_from_first, None),
        (_listed_frame_without_jpeg, None),
        (_png_without_jpeg, None),
        (_video_without_jpegs, None),
    ],
)
def test_bad_input_names_the_file_and_skip_mode_lists_it(
    synthetic, tmp_path, capsys, breaker, dense
):
    split_dir, out = str(tmp_path / "train"), str(tmp_path / "out")
    shutil.copytree(synthetic.train, split_dir)
    meta, name, frames = _first(split_dir)
    bad_path = breaker(split_dir, meta, name, frames)
    with pytest.raises(video_record.BadInputError, match=re.escape(bad_path)):
        convert.convert(split_dir, out, num_shards=2, dense=dense)
    capsys.readouterr()
    info = convert.convert(split_dir, out, 2, on_error="skip", dense=dense)
    assert [s["video"] for s in info["skipped"]] == [name]
    assert bad_path in info["skipped"][0]["error"]
    assert " at 0x" not in info["skipped"][0]["error"]  # no object addresses: same text each run
    assert info["num_videos"] == len(meta) - 1 and sorted(_parse(out)) == sorted(meta)[1:]
    assert f"SKIPPED {name}: " in capsys.readouterr().out
    # once the input is fixed, a rerun redoes the shard that skipped the video
    shutil.rmtree(split_dir)
    shutil.copytree(synthetic.train, split_dir)
    info = convert.convert(split_dir, out, 2, on_error="skip", dense=dense)
    assert info["skipped"] == [] and sorted(_parse(out)) == sorted(meta)
    # a failed run leaves no dataset_info.json behind (it would describe other shards)
    breaker(split_dir, *_first(split_dir))
    with pytest.raises(video_record.BadInputError):
        convert.convert(split_dir, out, num_shards=2, dense=dense)
    assert not os.path.exists(os.path.join(out, rs.DATASET_INFO))


def test_cli(synthetic, tmp_path, capsys):
    out = str(tmp_path / "out")
    _cli_main([f"--input_dir={synthetic.valid}", f"--output_dir={out}", "--num_shards=1"])
    assert f"converted {synthetic.options['num_valid']} videos" in capsys.readouterr().out
    assert os.listdir(out) and _parse(out).keys() == _meta(synthetic.valid).keys()
    renamed = str(tmp_path / "renamed")
    argv = [f"--input_dir={synthetic.valid}", f"--output_dir={renamed}", "--split=heldout"]
    _cli_main([*argv, "--num_shards=2"])
    assert sorted(f for f in os.listdir(renamed) if f.endswith(".tfrecord")) == [
        "heldout-00000-of-00002.tfrecord",
        "heldout-00001-of-00002.tfrecord",
    ]
    with pytest.raises(ValueError, match="split name"):
        convert.convert(synthetic.valid, renamed, split="a/b")
    split_dir = str(tmp_path / "valid")
    shutil.copytree(synthetic.valid, split_dir)
    meta, name, frames = _first(split_dir)
    bad = _garbage_jpeg(split_dir, meta, name, frames)
    with pytest.raises(SystemExit, match=re.escape(bad)):
        _cli_main([f"--input_dir={split_dir}", f"--output_dir={tmp_path / 'o2'}"])
    with pytest.raises(ValueError, match="on_error"):
        convert.convert(split_dir, str(tmp_path / "o3"), on_error="ignore")

"""Input pipeline: augmentation geometry, clip sampling, batches, determinism, resume, eval."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from rnn_vos_jax.configs import common
from rnn_vos_jax.data import (
    annotations,
    distance,
    eval_records,
    pipeline,
    record_files,
    record_schema,
    vos_reader,
)
from rnn_vos_jax.data import augment as aug

RED, BLUE = (250, 10, 10), (20, 40, 200)


def _warp(img, hw_orig, hw_out, interp="nearest", **params):
    p = {"flip": 0.0, "angle": 0.0, "scale": 1.0, "shear": 0.0, "tx": 0.0, "ty": 0.0}
    p.update(params)
    fwd = aug.forward_matrix(p, hw_orig)
    out = aug.warp(img, aug.sampling_matrix(fwd, hw_orig, img.shape[:2], hw_out), hw_out, interp)
    return out.reshape(out.shape[:2] + img.shape[2:])


def _img(h, w, c=1, seed=0):
    return np.random.default_rng(seed).integers(1, 255, (h, w, c)).astype(np.uint8)


def test_flip_rotate_translate_known_answers():
    img = _img(8, 12)
    np.testing.assert_array_equal(_warp(img, (8, 12), (8, 12), flip=1), img[:, ::-1])
    sq = _img(8, 8, seed=1)
    np.testing.assert_array_equal(_warp(sq, (8, 8), (8, 8), angle=90), np.rot90(sq))
    np.testing.assert_array_equal(_warp(sq, (8, 8), (8, 8), angle=180), sq[::-1, ::-1])
    shifted = _warp(img, (8, 12), (8, 12), tx=2, ty=-1)
    expected = np.zeros_like(img)
    expected[:7, 2:] = img[1:, :10]
    np.testing.assert_array_equal(shifted, expected)
    # flip happens before the translation, like hflip then affine in the authors' code
    both = _warp(img, (8, 12), (8, 12), flip=1, tx=2)
    expected = np.zeros_like(img)
    expected[:, 2:] = img[:, ::-1][:, :10]
    np.testing.assert_array_equal(both, expected)


def test_scale_shear_resize_known_answers():
    sq = _img(8, 8, seed=2)
    idx = np.array([2, 2, 3, 3, 4, 4, 5, 5])  # zoom x2 about the centre, nearest
    np.testing.assert_array_equal(_warp(sq, (8, 8), (8, 8), scale=2), sq[idx][:, idx])
    # nearest downscale by 2 samples like PIL: source = floor((i + 0.5) * 2)
    big = _img(8, 16, seed=3)
    np.testing.assert_array_equal(_warp(big, (8, 16), (4, 8)), big[1::2, 1::2])
    line = np.zeros((9, 15, 1), np.uint8)
    line[:, 7] = 1
    sheared = _warp(line, (9, 15), (9, 15), shear=45)
    expected = np.zeros_like(line)
    expected[np.arange(9), 7 + np.arange(9) - 4] = 1  # lower rows move right
    np.testing.assert_array_equal(sheared, expected)


def test_affine_on_resized_frame_equals_affine_then_resize():
    # 2x2 blocks make a nearest half-size resize exact, so both orders must agree bit for bit
    blocks = np.repeat(np.repeat(_img(6, 10, seed=4), 2, 0), 2, 1)  # 12 x 20 original
    params = {"flip": 1, "angle": 180, "tx": 4, "ty": -2}
    full = _warp(blocks, (12, 20), (12, 20), **params)[::2, ::2]
    small = blocks[::2, ::2]  # the original resized to 6 x 10
    np.testing.assert_array_equal(_warp(small, (12, 20), (6, 10), **params), full)
    np.testing.assert_array_equal(_warp(blocks, (12, 20), (6, 10), **params), full)


def test_sample_affine_units():
    data = common.data_config(batch_size=4, curriculum="uniform")
    data.affine_units = "pixels_degrees"
    u = [0.2, 0.99, 0.0, 0.99, 0.0, 0.5]
    p = aug.sample_affine(u, (100, 200), data)
    assert p["flip"] == 1.0 and p["scale"] == 0.75
    np.testing.assert_allclose([p["angle"], p["shear"]], [19.6, 9.8], rtol=1e-5)
    np.testing.assert_allclose([p["tx"], p["ty"]], [-20.0, 0.0], atol=1e-4)
    data.affine_units = "authors"
    p = aug.sample_affine(u, (100, 200), data)
    assert p["angle"] == 19 and p["scale"] == 0.75
    np.testing.assert_allclose([p["shear"], p["tx"], p["ty"]], [0.09, -0.1, -0.1], atol=1e-6)
    data.augment = False
    p = aug.sample_affine(u, (100, 200), data)
    assert p == {"flip": 0.0, "angle": 0.0, "scale": 1.0, "shear": 0.0, "tx": 0.0, "ty": 0.0}
    data.augment, data.affine_units = True, "percent"
    with pytest.raises(ValueError, match="affine_units"):
        aug.sample_affine(u, (100, 200), data)


def test_curriculum():
    data = common.data_config(batch_size=4, curriculum="uniform")
    assert pipeline.clip_length_range(0, data) == (5, 5, False)
    assert pipeline.clip_length_range(25, data) == (5, 7, False)
    assert pipeline.clip_length_range(300, data) == (5, 10, False)
    data.curriculum = "fixed_then_uniform"
    assert pipeline.clip_length_range(7, data) == (5, 5, True)
    assert pipeline.clip_length_range(59, data) == (10, 10, True)
    assert pipeline.clip_length_range(60, data) == (5, 10, False)
    for curriculum in ("uniform", "fixed_then_uniform", "none"):
        data.curriculum = curriculum
        for epoch in (0, 13, 42, 61, 500):
            lo, hi, _ = pipeline.clip_length_range(epoch, data)
            drawn = {
                int(pipeline._clip_length(tf.constant(epoch, tf.int64), u, data))
                for u in np.linspace(0.0, 0.999, 60, dtype=np.float32)
            }
            assert drawn == set(range(lo, hi + 1)), (curriculum, epoch)
    data.curriculum = "linear"
    with pytest.raises(ValueError, match="curriculum"):
        pipeline.clip_length_range(0, data)


# ---------------------------------------------------------------- records made by hand


def _jpeg(img):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _png(ids):
    buf = io.BytesIO()
    Image.fromarray(ids.astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _video(name, n, h, w, boxes, listed, move=1):
    """Frames: blue background, each box painted red moving `move` rows a frame; ids in PNGs."""
    frames, pngs = [], []
    for t in range(n):
        img = np.zeros((h, w, 3), np.uint8) + np.array(BLUE, np.uint8)
        ids = np.zeros((h, w), np.uint8)
        for obj, (y0, y1, x0, x1) in boxes.items():
            if t in listed[obj]:
                img[y0 + move * t : y1 + move * t, x0:x1] = RED
                ids[y0 + move * t : y1 + move * t, x0:x1] = obj
        frames.append(_jpeg(img))
        pngs.append(_png(ids))
    b = lambda v: tf.train.Feature(bytes_list=tf.train.BytesList(value=v))
    i = lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=v))
    objs = sorted(boxes)
    feature = {
        record_schema.VIDEO: b([name.encode()]),
        record_schema.HEIGHT: i([h]),
        record_schema.WIDTH: i([w]),
        record_schema.FRAME_NAMES: b([f"{5 * t:05d}".encode() for t in range(n)]),
        record_schema.JPEG: b(frames),
        record_schema.PNG: b(pngs),
        record_schema.OBJECT_IDS: i(objs),
        record_schema.CATEGORIES: b([b"box"] * len(objs)),
        record_schema.OBJECT_FRAMES: i([int(t in listed[o]) for o in objs for t in range(n)]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """3 shards, 7 videos, 11 (video, object) pairs of which 10 have >= 2 listed frames."""
    root = tmp_path_factory.mktemp("records")
    videos = []
    for v in range(7):
        h, w = (40, 64) if v % 2 else (48, 80)
        n = 4 + v
        boxes = {1: (8, 24, 10, 30)}
        listed = {1: set(range(n))}
        if v % 2 == 0:
            boxes[3] = (20, 30, 40, 60)
            listed[3] = set(range(2, n)) if v else {1}  # video 0: object 3 has one frame
        videos.append(_video(f"vid{v}", n, h, w, boxes, listed))
    files = []
    for s in range(3):
        path = str(root / record_schema.shard_name("train", s, 3))
        with tf.io.TFRecordWriter(path) as writer:
            for rec in videos[s::3]:
                writer.write(rec)
        files.append(path)
    return files


def _config(files, **kw):
    data = common.data_config(batch_size=3, curriculum="none")
    data.update(
        {
            # the expectations below were worked out with this geometry and resampling
            "affine_units": "pixels_degrees",
            "frame_resample": "bilinear",
            "antialias": False,
            "train_records": ",".join(files),
            "image_size": (24, 40),
            "batch_size": 3,
            "min_clip_len": 2,
            "max_clip_len": 4,
            "curriculum": "none",
            "shuffle_buffer": 8,
            "record_shuffle_buffer": 4,
            "border": 6,
            "bin_size": 2,
        }
    )
    data.update(kw)
    return data


def _take(data, n, **kw):
    it = pipeline.train_iterator(data, **kw)
    return [next(it) for _ in range(n)]


def test_batches_shapes_valid_and_distance(records):
    batches = _take(_config(records), 4, seed=3)
    b = batches[0]
    assert b["frames"].shape == (3, 5, 24, 40, 3) and b["frames"].dtype == np.uint8
    assert b["masks"].shape == (3, 5, 24, 40, 1) and b["masks"].dtype == np.float32
    assert b["distance"].shape == (3, 5, 24, 40) and b["distance"].dtype == np.int32
    assert b["valid"].shape == (3, 5) and b["valid"].dtype == bool
    counts = set()
    for b in batches:
        assert set(np.unique(b["masks"])) <= {0.0, 1.0}
        for valid, masks, dist, frames in zip(b["valid"], b["masks"], b["distance"], b["frames"]):
            c = int(valid.sum())
            counts.add(c)
            assert valid[:c].all() and 2 <= c <= 5  # a prefix; >= min_object_frames
            assert not masks[c:].any() and not frames[c:].any() and not dist[c:].any()
            np.testing.assert_array_equal(dist, distance.distance_classes_batch(masks, 6, 2))
    assert len(counts) > 1


@pytest.fixture(scope="module")
def static_records(tmp_path_factory):
    """2 videos of 6 identical frames: a static red box left of the centre, id 1."""
    path = str(tmp_path_factory.mktemp("static") / "static.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for v in range(2):
            writer.write(_video(f"s{v}", 6, 48, 80, {1: (16, 32, 16, 32)}, {1: set(range(6))}, 0))
    return [path]


def test_augmentation_identical_across_clip_and_frames(static_records):
    # nearest sampling from the full-size decode: frames and masks see the same sample points
    data = _config(
        static_records,
        batch_size=4,
        rotation=30.0,
        antialias=False,
        frame_resample="nearest",
        jpeg_downscale=False,
        max_clip_len=5,
    )
    flips = set()
    for b in _take(data, 3, seed=0):
        for valid, masks, frames in zip(b["valid"], b["masks"][..., 0] > 0, b["frames"]):
            frames, masks = frames[valid], masks[valid]
            assert (frames == frames[0]).all() and (masks == masks[0]).all()  # one warp per clip
            rgb = frames[0].astype(int)
            red = (rgb[..., 0] > 150) & (rgb[..., 2] < 110)
            assert (red == masks[0]).mean() > 0.97 and 20 < masks[0].sum() < 120
            cols = np.nonzero(masks[0])[1]
            flips.add(bool(cols.mean() > 20))  # the box is left of the centre unless flipped
    assert flips == {False, True}
    # default path (antialiased resize, bilinear warp): red where the mask is, up to edges
    for b in _take(_config(static_records, batch_size=4), 2, seed=1):
        rgb, masks = b["frames"][:, 0].astype(int), b["masks"][:, 0, ..., 0] > 0
        red = (rgb[..., 0] > 150) & (rgb[..., 2] < 110)
        inter, union = (red & masks).sum(), (red | masks).sum()
        assert inter / union > 0.7


def test_determinism_seed_and_resume(records):
    data = _config(records)
    base = _take(data, 9, seed=7)  # 10 samples per epoch of 3: crosses two epoch boundaries
    again = _take(data, 9, seed=7)
    other = _take(data, 2, seed=8)
    for a, b in zip(base, again):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(base[0]["frames"], other[0]["frames"])
    for start in (2, 7):
        resumed = _take(data, 9 - start, seed=7, start_batch=start)
        for a, b in zip(base[start:], resumed):
            for k in a:
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"start {start} {k}")


def test_split_by_process(records):
    files = pipeline.record_files(",".join(records))
    parts = [pipeline.split_files(files, p, 2) for p in range(2)]
    assert sorted(parts[0] + parts[1]) == files and not set(parts[0]) & set(parts[1])
    counts = [pipeline.samples_per_epoch(p, 2) for p in parts]
    assert sum(counts) == pipeline.samples_per_epoch(files, 2) == 10
    assert pipeline.samples_per_epoch(files, 1) == 11
    with pytest.raises(ValueError, match="cannot be split"):
        pipeline.split_files(files, 0, 4)
    with pytest.raises(FileNotFoundError, match="no TFRecord"):
        pipeline.record_files(os.path.join(os.path.dirname(files[0]), "nope-*"))
    # each process's epoch holds the (video, object) pairs of its own files, once each
    data = _config(records)
    pairs = []
    for part in parts:
        epoch = list(pipeline._epoch_dataset(part, 0, 0, data).as_numpy_iterator())
        assert [int(e["index"]) for e in epoch] == list(range(len(epoch)))
        pairs += [(e["video"].decode(), int(e["object_id"])) for e in epoch]
    expected = [(f"vid{v}", 1) for v in range(7)] + [(f"vid{v}", 3) for v in (2, 4, 6)]
    assert sorted(pairs) == sorted(expected)


def test_eval_videos(records):
    videos = list(eval_records.eval_videos(",".join(records)))
    assert [v.name for v in videos] == ["vid0", "vid3", "vid6", "vid1", "vid4", "vid2", "vid5"]
    v0 = videos[0]
    assert v0.frames.shape == (4, 48, 80, 3) and v0.frames.dtype == np.uint8
    assert v0.annotations.shape == (4, 48, 80) and v0.annotated.all()
    assert v0.frame_names == ["00000", "00005", "00010", "00015"]
    np.testing.assert_array_equal(v0.object_ids, [1, 3])
    np.testing.assert_array_equal(v0.first_frame, [0, 1])  # object 3 is listed on frame 1
    assert v0.categories == ["box", "box"] and (v0.height, v0.width) == (48, 80)
    assert (v0.annotations[1] == 3).sum() == 10 * 20 and not (v0.annotations[0] == 3).any()
    red = v0.frames[0, 10:22, 12:28].astype(int)
    assert np.abs(red - np.array(RED)).max() < 20
    v6 = videos[2]
    np.testing.assert_array_equal(v6.first_frame, [0, 2])
    assert len(videos[1].object_ids) == 1


def test_bad_input_errors(records):
    with pytest.raises(ValueError, match="no \\(video, object\\) pair"):
        pipeline.train_dataset(_config(records, min_object_frames=50), seed=0)
    with pytest.raises(ValueError, match="cannot read annotation PNG of video x"):
        annotations.decode(b"not a png", shape=(4, 6), name="PNG of video x")
    with pytest.raises(ValueError, match="PNG of video x is \\(4, 6\\), frames are \\(5, 6\\)"):
        annotations.decode(_png(np.zeros((4, 6))), shape=(5, 6), name="PNG of video x")
    np.testing.assert_array_equal(annotations.decode(b"", shape=(2, 3)), np.zeros((2, 3)))


def test_synthetic_dataset_round_trip(synthetic):
    """make_synthetic -> convert -> eval_videos equals the raw folder; training batches work."""
    out = synthetic.train_records
    reader = vos_reader.VOSReader(synthetic.train)
    videos = list(eval_records.eval_videos(out))
    assert sorted(v.name for v in videos) == reader.video_names()
    for v in videos:
        info = reader.video(v.name)
        assert v.frame_names == info.frames and (v.height, v.width) == (info.height, info.width)
        assert (v.height, v.width) in synthetic.options["frame_sizes"]
        np.testing.assert_array_equal(v.object_ids, sorted(info.objects))
        first = [info.frames.index(info.objects[k].frames[0]) for k in sorted(info.objects)]
        np.testing.assert_array_equal(v.first_frame, first)
        for n, name in enumerate(info.frames):
            np.testing.assert_array_equal(v.annotations[n], reader.read_annotation(v.name, name))
            diff = v.frames[n].astype(int) - reader.read_frame(v.name, name)
            assert np.abs(diff).max() <= 2
    data = _config([out], image_size=(32, 64), batch_size=2)
    data.train_records = out
    b = _take(data, 1, seed=0)[0]
    assert b["frames"].shape == (2, 5, 32, 64, 3) and b["masks"].any()


def test_file_splits_keep_the_global_batches_for_any_process_count(records):
    """data.file_splits=2: one process reading both splits yields the rows of two processes."""
    one = _take(_config(records, batch_size=4, file_splits=2), 3, seed=5, start_batch=1)
    halves = [
        _take(
            _config(records, batch_size=2, file_splits=2),
            3,
            seed=5,
            start_batch=1,
            process_index=p,
            process_count=2,
        )
        for p in range(2)
    ]
    for b, h0, h1 in zip(one, *halves):
        assert not np.array_equal(h0["frames"], h1["frames"])
        for k in b:
            np.testing.assert_array_equal(b[k], np.concatenate([h0[k], h1[k]]), err_msg=k)
    files = pipeline.record_files(",".join(records))
    # 0 (the default) is one split per process: files[p::n], the layout without the key
    assert record_files.process_files(_config(records), 1, 2) == [files[1::2]]
    assert record_files.process_files(_config(records, file_splits=2), 0, 1) == [
        files[0::2],
        files[1::2],
    ]
    with pytest.raises(ValueError, match="file_splits=2 cannot be shared by 3 processes"):
        record_files.process_files(_config(records, file_splits=2), 0, 3)
    with pytest.raises(ValueError, match="batch of 3 does not split over its 2 file splits"):
        pipeline.train_iterator(_config(records, file_splits=2), seed=0)

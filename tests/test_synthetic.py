"""Synthetic dataset: determinism, YouTube-VOS layout, meta.json consistency, seen/unseen split."""

import colorsys
import json
import os
import runpy
import shutil

import numpy as np
import pytest
from PIL import Image

from rnn_vos_jax.data import annotations
from rnn_vos_jax.data.synthetic import generate, scene

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli_main(argv):
    """The main() of the command `python data_prep/make_synthetic.py`, run in this process."""
    return runpy.run_path(os.path.join(REPO, "data_prep", "make_synthetic.py"))["main"](argv)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _files(root):
    """{path: bytes} of the files below `root`, but the shared dataset's records/ (conftest)."""
    out = {}
    for folder, subfolders, names in os.walk(root):
        if folder == root and "records" in subfolders:
            subfolders.remove("records")
        for name in names:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = _read(path)
    return out


def _meta(root, split):
    with open(os.path.join(root, split, "meta.json")) as f:
        return json.load(f)["videos"]


def test_same_seed_identical_bytes_and_other_seed_differs(synthetic, tmp_path):
    again = str(tmp_path / "again")
    generate.make_dataset(again, **synthetic.options)
    first, second = _files(synthetic.root), _files(again)
    assert len(first) > 50
    assert first == second
    other = str(tmp_path / "other")
    generate.make_dataset(other, **{**synthetic.options, "seed": synthetic.options["seed"] + 1})
    third = _files(other)
    assert third.keys() != first.keys() or any(third[k] != first[k] for k in first)


def test_layout_and_meta_match_pngs(synthetic):
    """On the session's synthetic dataset (conftest.SYNTHETIC), which the other tests rely on."""
    dataset, options = synthetic.root, synthetic.options
    for split in ("train", "valid"):
        meta = _meta(dataset, split)
        split_dir = os.path.join(dataset, split)
        assert sorted(meta) == sorted(os.listdir(os.path.join(split_dir, "JPEGImages")))
        for video, entry in meta.items():
            jpegs = sorted(os.listdir(os.path.join(split_dir, "JPEGImages", video)))
            pngs = sorted(os.listdir(os.path.join(split_dir, "Annotations", video)))
            frames = [j[:-4] for j in jpegs]
            assert [p[:-4] for p in pngs] == frames  # ground truth on every frame, both splits
            assert frames == [f"{5 * t:05d}" for t in range(len(frames))]
            assert 2 <= len(frames) <= options["num_frames"][1]
            ids_in = {}
            for frame in frames:
                image = Image.open(os.path.join(split_dir, "JPEGImages", video, frame + ".jpg"))
                png = Image.open(os.path.join(split_dir, "Annotations", video, frame + ".png"))
                assert png.mode == "P" and image.size == png.size
                assert image.size[::-1] in options["frame_sizes"]
                palette = np.array(png.getpalette()[:768], np.uint8).reshape(-1, 3)
                np.testing.assert_array_equal(palette, annotations.PALETTE)
                ids_in[frame] = set(np.unique(np.array(png)).tolist()) - {0}
            objects = {int(k): v for k, v in entry["objects"].items()}
            assert sorted(objects) == list(range(1, len(objects) + 1))
            assert 1 <= len(objects) <= options["num_objects"][1]
            for frame in frames:  # a frame is listed for an object iff its id is in the PNG
                listed = {k for k, v in objects.items() if frame in v["frames"]}
                assert listed == ids_in[frame], (video, frame)
            assert ids_in[frames[0]], "videos start with a visible object"
            firsts = [objects[k]["frames"][0] for k in sorted(objects)]
            assert firsts == sorted(firsts), "ids follow first appearance"


def test_categories_seen_unseen_and_late_objects(synthetic):
    dataset = synthetic.root
    train = _meta(dataset, "train")
    valid = _meta(dataset, "valid")
    cats = {
        s: {o["category"] for v in m.values() for o in v["objects"].values()}
        for s, m in (("train", train), ("valid", valid))
    }
    assert cats["train"] <= set(generate.SEEN_CATEGORIES)
    assert cats["valid"] - cats["train"], "valid must hold unseen categories"
    assert cats["valid"] & cats["train"], "valid must hold seen categories"
    late = [
        o["frames"][0] for m in (train, valid) for v in m.values() for o in v["objects"].values()
    ]
    assert any(first != "00000" for first in late), "some object must appear after frame 0"
    vanished = [
        video
        for split, m in (("train", train), ("valid", valid))
        for video, v in m.items()
        for o in v["objects"].values()
        if o["frames"][-1]
        != max(os.listdir(os.path.join(dataset, split, "Annotations", video)))[:-4]
        or len(o["frames"]) < 1 + int(o["frames"][-1]) // 5 - int(o["frames"][0]) // 5
    ]
    assert vanished, "some object must leave the frame or be fully occluded"


def test_objects_are_saturated_background_is_not(synthetic):
    dataset = synthetic.root
    split_dir = os.path.join(dataset, "train")
    for video in _meta(dataset, "train"):
        image = np.array(Image.open(os.path.join(split_dir, "JPEGImages", video, "00000.jpg")))
        ids = np.array(Image.open(os.path.join(split_dir, "Annotations", video, "00000.png")))
        rgb = image.reshape(-1, 3) / 255.0
        sat = np.array([colorsys.rgb_to_hsv(*p)[1] for p in rgb]).reshape(ids.shape)
        obj = ids > 0
        # eroded masks: JPEG blurs edges
        inner = obj & np.roll(obj, 2, 0) & np.roll(obj, -2, 0) & np.roll(obj, 2, 1)
        assert sat[inner].mean() > sat[~obj].mean() + 0.2


def test_rerun_is_noop_and_changed_parameters_need_overwrite(synthetic, tmp_path):
    copy = str(tmp_path / "copy")  # the shared dataset as it was made (copy2 keeps the times)
    shutil.copytree(synthetic.root, copy, ignore=shutil.ignore_patterns("records"))
    meta_path = os.path.join(copy, "train", "meta.json")
    before = os.stat(meta_path).st_mtime_ns
    generate.make_dataset(copy, **synthetic.options)
    assert os.stat(meta_path).st_mtime_ns == before
    root = str(tmp_path / "d")
    options = {**synthetic.options, "num_valid": 1, "seed": 0}
    generate.make_dataset(root, **{**options, "num_train": 1})
    with pytest.raises(FileExistsError, match="overwrite"):
        generate.make_dataset(root, **{**options, "num_train": 2})
    generate.make_dataset(root, **{**options, "num_train": 2}, overwrite=True)
    assert len(_meta(root, "train")) == 2


def test_cli_and_bad_options(tmp_path, capsys):
    root = str(tmp_path / "cli")
    _cli_main([
        f"--output_dir={root}", "--num_train=1", "--num_valid=1", "--seed=5",
        "--frame_sizes=32x64", "--num_frames=3,3", "--num_objects=2,2",
    ])  # fmt: skip
    (video,) = _meta(root, "train")
    assert Image.open(os.path.join(root, "train", "JPEGImages", video, "00000.jpg")).size == (
        64,
        32,
    )
    with pytest.raises(SystemExit):
        _cli_main([f"--output_dir={root}", "--frame_sizes=32by64"])
    assert "--frame_sizes=HxW" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown shape 'hexagram'"):
        generate.make_dataset(str(tmp_path / "x"), 1, 1, unseen_categories=("hexagram",))
    with pytest.raises(ValueError, match="num_frames"):
        generate.make_dataset(str(tmp_path / "z"), 1, 1, num_frames=(1, 3))
    with pytest.raises(ValueError, match="frame_sizes"):
        generate.make_dataset(str(tmp_path / "w"), 1, 1, frame_sizes=((8, 64),))
    with pytest.raises(ValueError, match="num_objects"):
        generate.make_dataset(str(tmp_path / "y"), 1, 1, num_objects=(0, 2))


def test_high_contrast_same_geometry_and_objects_brighter_than_background(tmp_path):
    def render(contrast):
        rng = np.random.default_rng(11)
        cats = generate.SEEN_CATEGORIES
        return generate._render_video(
            rng, scene.VideoSpec(64, 96, 12, tuple(cats), None, (2, 3), contrast)
        )

    frames_n, labels_n, ids_n = render("natural")
    frames_h, labels_h, ids_h = render("high")
    # Same random draws: only colours change.
    np.testing.assert_array_equal(labels_n, labels_h)
    assert ids_n == ids_h
    value_h = np.stack(frames_h).max(-1)  # HSV value = max channel
    obj = labels_h > 0
    assert obj.any() and (~obj).any()
    assert value_h[obj].min() > value_h[~obj].max() + 40
    value_n = np.stack(frames_n).max(-1)
    assert value_n[obj].min() < value_n[~obj].max()  # natural: dark stripes overlap background
    with pytest.raises(ValueError, match="contrast"):
        generate.make_dataset(str(tmp_path / "c"), 1, 1, contrast="extreme")


def test_all_frames_layout_matches_valid(synthetic, tmp_path):
    """--all_frames: valid_all_frames holds every frame, valid every 5th of them (same bytes),
    meta.json and valid's PNGs as without it; train is the same as without the option."""
    root = synthetic.root  # made with all_frames=True
    splits = {"valid": synthetic.valid, "valid_all_frames": synthetic.valid_all_frames}
    assert splits["valid_all_frames"] == os.path.join(root, "valid_all_frames")
    assert sorted(os.listdir(splits["valid_all_frames"])) == ["JPEGImages"]
    meta = _meta(root, "valid")
    late = 0
    for video, entry in meta.items():
        dense = sorted(os.listdir(os.path.join(splits["valid_all_frames"], "JPEGImages", video)))
        sparse = sorted(os.listdir(os.path.join(splits["valid"], "JPEGImages", video)))
        assert dense == [f"{t:05d}.jpg" for t in range(len(dense))]
        assert sparse == dense[::5] and len(dense) >= 5 * len(sparse) - 4
        for name in sparse:
            a, b = (
                os.path.join(splits[s], "JPEGImages", video, name)
                for s in ("valid", "valid_all_frames")
            )
            assert _read(a) == _read(b)
        pngs = sorted(os.listdir(os.path.join(splits["valid"], "Annotations", video)))
        assert [p[:-4] for p in pngs] == [s[:-4] for s in sparse]
        for obj in entry["objects"].values():
            png = os.path.join(splits["valid"], "Annotations", video, obj["frames"][0] + ".png")
            assert set(obj["frames"]) <= {s[:-4] for s in sparse}
            assert np.array(Image.open(png)).any()
            late += obj["frames"][0] != "00000"
    assert late, "some object must start after the first frame"
    plain = str(tmp_path / "plain")
    generate.make_dataset(plain, **{**synthetic.options, "all_frames": False})
    assert not os.path.exists(os.path.join(plain, "valid_all_frames"))
    assert _files(os.path.join(plain, "train")) == _files(synthetic.train)

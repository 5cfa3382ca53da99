"""VOSReader on YouTube-VOS train, valid-style (sparse PNGs), meta-less and DAVIS 2016/2017 trees."""

import io
import json
import os
import shutil

import ml_collections
import numpy as np
import pytest
from PIL import Image

from rnn_vos_jax.data import annotations, augment, vos_reader
from rnn_vos_jax.data.eval_video import EvalVideo
from rnn_vos_jax.evaluation import videos
from rnn_vos_jax.scoring import folders


def _meta(split_dir):
    with open(os.path.join(split_dir, "meta.json")) as f:
        return json.load(f)["videos"]


def _ids(path):
    return np.array(Image.open(path))


def make_sparse_valid(src, dst):
    """YouTube-VOS valid style: PNGs only where objects first appear, holding only those objects."""
    shutil.copytree(src, dst)
    for video, entry in _meta(dst).items():
        firsts = {}
        for obj_id, obj in entry["objects"].items():
            firsts.setdefault(obj["frames"][0], []).append(int(obj_id))
        folder = os.path.join(dst, "Annotations", video)
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if name[:-4] not in firsts:
                os.remove(path)
            else:
                ids = _ids(path)
                ids[~np.isin(ids, firsts[name[:-4]])] = 0
                with open(path, "wb") as f:
                    f.write(annotations.encode(ids))
    return dst


def make_davis(split_dir, root, year, sets):
    """DAVIS tree from a synthetic split; 2016 masks are 0/255 greyscale of all objects."""
    for sub in ("JPEGImages", "Annotations"):
        shutil.copytree(os.path.join(split_dir, sub), os.path.join(root, sub, "480p"))
    os.makedirs(os.path.join(root, "ImageSets", year))
    for set_name, set_videos in sets.items():
        lines = []
        for video in set_videos:
            if year == "2016":  # the original DAVIS 2016 lists frame paths
                folder = os.path.join(root, "Annotations", "480p", video)
                for name in sorted(os.listdir(folder)):
                    path = os.path.join(folder, name)
                    Image.fromarray((_ids(path) > 0).astype(np.uint8) * 255).save(path)
                    lines.append(f"/JPEGImages/480p/{video}/{name[:-4]}.jpg /Annotations/480p/..")
            else:
                lines.append(video)
        with open(os.path.join(root, "ImageSets", year, f"{set_name}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return root


def test_youtube_train(synthetic):
    split_dir = synthetic.train
    reader = vos_reader.VOSReader(split_dir)
    meta = _meta(split_dir)
    assert (reader.layout, reader.split, reader.year) == ("youtube_vos", "train", None)
    assert reader.video_names() == sorted(meta)
    for name in reader.video_names():
        info = reader.video(name)
        frames = sorted(f[:-4] for f in os.listdir(os.path.join(split_dir, "JPEGImages", name)))
        assert info.frames == frames and info.annotated == frames
        assert (info.height, info.width) in synthetic.options["frame_sizes"]
        assert list(info.objects) == sorted(int(k) for k in meta[name]["objects"])
        for obj_id, obj in info.objects.items():
            assert obj.obj_id == obj_id
            assert obj.category == meta[name]["objects"][str(obj_id)]["category"]
            assert obj.frames == meta[name]["objects"][str(obj_id)]["frames"]
        frame = reader.read_frame(name, frames[1])
        assert frame.dtype == np.uint8 and frame.shape == (info.height, info.width, 3)
        expected = np.array(Image.open(reader.frame_path(name, frames[1])).convert("RGB"))
        np.testing.assert_array_equal(frame, expected)
        ids = reader.read_annotation(name, frames[1])
        assert ids.dtype == np.uint8 and ids.shape == (info.height, info.width)
        np.testing.assert_array_equal(ids, _ids(reader.annotation_path(name, frames[1])))
        assert reader.annotation_path(name, "00005").endswith(f"Annotations/{name}/00005.png")


def test_youtube_valid_style_sparse_annotations(synthetic, tmp_path):
    split_dir = make_sparse_valid(synthetic.valid, str(tmp_path / "valid"))
    reader = vos_reader.VOSReader(split_dir)
    assert reader.split == "valid"
    meta = _meta(split_dir)
    saw_later_first = False
    for name in reader.video_names():
        info = reader.video(name)
        firsts = sorted({o["frames"][0] for o in meta[name]["objects"].values()})
        assert info.annotated == firsts
        assert len(info.frames) > len(info.annotated)
        for obj in info.objects.values():  # objects and frames still come from meta.json
            assert obj.frames == meta[name]["objects"][str(obj.obj_id)]["frames"]
            assert obj.obj_id in reader.read_annotation(name, obj.frames[0])
            saw_later_first |= obj.frames[0] != info.frames[0]
    assert saw_later_first


def test_youtube_without_meta_takes_objects_from_pngs(synthetic, tmp_path):
    split_dir = str(tmp_path / "train")
    shutil.copytree(synthetic.train, split_dir)
    meta = _meta(split_dir)
    os.remove(os.path.join(split_dir, "meta.json"))
    reader = vos_reader.VOSReader(split_dir)
    for name in reader.video_names():
        objects = reader.video(name).objects
        assert {k: (o.category, o.frames) for k, o in objects.items()} == {
            int(k): (None, o["frames"]) for k, o in meta[name]["objects"].items()
        }


def test_davis_2017(synthetic, tmp_path):
    names = sorted(_meta(synthetic.train))
    sets = {"val": names[:2], "train": names[2:]}
    root = make_davis(synthetic.train, str(tmp_path / "davis"), "2017", sets)
    reader = vos_reader.VOSReader(root)
    assert (reader.layout, reader.split, reader.year) == ("davis", "val", "2017")
    assert reader.video_names() == names[:2]
    meta = _meta(synthetic.train)
    for name in names[:2]:
        info = reader.video(name)
        assert {k: (o.category, o.frames) for k, o in info.objects.items()} == {
            int(k): (None, o["frames"]) for k, o in meta[name]["objects"].items()
        }
        assert reader.frame_path(name, "00000").endswith(f"JPEGImages/480p/{name}/00000.jpg")
        ids = np.stack([reader.read_annotation(name, f) for f in info.frames])
        assert set(np.unique(ids).tolist()) == {0, *info.objects}
    assert vos_reader.VOSReader(root, davis_set="train").video_names() == names[2:]
    os.makedirs(os.path.join(root, "ImageSets", "2016"))  # DAVIS 2017 trainval ships these too
    with open(os.path.join(root, "ImageSets", "2016", "val.txt"), "w") as f:
        f.write(names[0] + "\n")
    merged = vos_reader.VOSReader(root, year=2016)  # DAVIS 2016 protocol on a 2017 tree
    assert merged.video_names() == names[:1]
    info = merged.video(names[0])
    assert list(info.objects) == [1] and info.objects[1].frames == info.frames
    assert set(np.unique(merged.read_annotation(names[0], "00000")).tolist()) == {0, 1}


def test_davis_2016_binary_masks(synthetic, tmp_path):
    names = sorted(_meta(synthetic.train))
    root = make_davis(synthetic.train, str(tmp_path / "d16"), "2016", {"val": names})
    reader = vos_reader.VOSReader(root)
    assert reader.year == "2016" and reader.video_names() == names
    name = names[0]
    raw = _ids(reader.annotation_path(name, "00000"))
    assert set(np.unique(raw).tolist()) == {0, 255}
    ids = reader.read_annotation(name, "00000")
    np.testing.assert_array_equal(ids, (raw == 255).astype(np.uint8))
    assert list(reader.video(name).objects) == [1]
    # 0/255 greyscale masks read as id 1 without the DAVIS 2016 flag too
    np.testing.assert_array_equal(annotations.decode(reader.annotation_path(name, "00000")), ids)


def test_reader_video_is_an_eval_video(synthetic):
    reader = vos_reader.VOSReader(synthetic.valid)
    name = reader.video_names()[0]
    info = reader.video(name)
    video = videos.reader_video(reader, name)
    n, k = len(info.frames), len(info.objects)
    assert isinstance(video, EvalVideo) and video.name == name
    assert video.frames.shape == (n, info.height, info.width, 3) and video.frames.dtype == np.uint8
    assert (info.height, info.width) in synthetic.options["frame_sizes"]
    np.testing.assert_array_equal(video.frames[1], reader.read_frame(name, info.frames[1]))
    np.testing.assert_array_equal(
        video.annotations[2], reader.read_annotation(name, info.frames[2])
    )
    assert video.annotated.tolist() == [True] * n  # synthetic valid has every PNG
    np.testing.assert_array_equal(video.object_ids, sorted(info.objects))
    first = [info.frames.index(info.objects[o].frames[0]) for o in sorted(info.objects)]
    np.testing.assert_array_equal(video.first_frame, first)
    assert len(video.categories) == k and all(video.categories)
    meta = video.without_frames()
    assert meta.frames is None and video.frames is not None
    np.testing.assert_array_equal(meta.annotations, video.annotations)
    assert (meta.name, meta.height, meta.width) == (name, info.height, info.width)


def test_eval_video_rejects_inconsistent_shapes():
    fields = {
        "name": "vidx",
        "frame_names": ["00000", "00005"],
        "frames": np.zeros((2, 4, 6, 3), np.uint8),
        "annotations": np.zeros((2, 4, 6), np.uint8),
        "annotated": np.array([True, False]),
        "object_ids": np.array([1, 2], np.int32),
        "categories": ["a", ""],
        "first_frame": np.array([0, 1], np.int32),
        "height": 4,
        "width": 6,
    }
    EvalVideo(**fields)
    bad = {
        "frames": np.zeros((2, 5, 6, 3), np.uint8),
        "annotations": np.zeros((3, 4, 6), np.uint8),
        "annotated": np.array([True]),
        "first_frame": np.array([0], np.int32),
        "categories": ["a"],
    }
    for field, value in bad.items():
        with pytest.raises(ValueError, match="video vidx"):
            EvalVideo(**{**fields, field: value})
    with pytest.raises(ValueError, match=r"frames are \(5, 6\), the video says \(4, 6\)"):
        EvalVideo(**{**fields, "frames": bad["frames"]})
    with pytest.raises(ValueError, match=r"first frames \[0 2\] not in \[0, 2\)"):
        EvalVideo(**{**fields, "first_frame": np.array([0, 2], np.int32)})


def test_palette_and_annotation_codecs():
    assert annotations.PALETTE.shape == (256, 3)
    assert annotations.PALETTE[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert annotations.PALETTE[255].tolist() == [224, 224, 192]
    ids = np.arange(12, dtype=np.uint8).reshape(3, 4)
    png = annotations.encode(ids)
    np.testing.assert_array_equal(annotations.decode(png), ids)
    rgb = io.BytesIO()
    Image.fromarray(annotations.PALETTE[ids]).save(rgb, format="PNG")
    np.testing.assert_array_equal(annotations.decode(rgb.getvalue()), ids)
    buffer = io.BytesIO()
    Image.fromarray(np.stack([ids, np.full_like(ids, 255)], -1), "LA").save(buffer, format="PNG")
    np.testing.assert_array_equal(annotations.decode(buffer.getvalue()), ids)
    bad = annotations.PALETTE[ids].copy()
    bad[0, 0] = (1, 2, 3)
    rgb = io.BytesIO()
    Image.fromarray(bad).save(rgb, format="PNG")
    with pytest.raises(ValueError, match="not in the DAVIS palette"):
        annotations.decode(rgb.getvalue())
    with pytest.raises(ValueError, match="uint8"):
        annotations.encode(ids.astype(np.int32))


@pytest.mark.parametrize("kind", ["rgb_palette_colours", "grey_0_255"])
def test_former_decoders_agree(tmp_path, kind):
    """Raw-folder reading, training clips and scoring decode the same PNG to the same ids."""
    ids = np.zeros((12, 16), np.uint8)
    ids[2:6, 3:9] = 1
    if kind == "rgb_palette_colours":
        ids[7:11, 10:15] = 2
        ids[0, :4] = 3
        image = Image.fromarray(annotations.PALETTE[ids])  # mode RGB
    else:
        image = Image.fromarray(ids * 255)  # mode L, DAVIS 2016 style 0/255
    root = tmp_path / "set"
    for sub in ("JPEGImages", "Annotations"):
        os.makedirs(root / sub / "vid")
    for frame in ("00000", "00005", "00010"):
        Image.fromarray(np.full((12, 16, 3), 90, np.uint8)).save(
            root / "JPEGImages" / "vid" / f"{frame}.jpg"
        )
        image.save(root / "Annotations" / "vid" / f"{frame}.png")
    png = (root / "Annotations" / "vid" / "00005.png").read_bytes()
    object_ids = sorted(set(np.unique(ids).tolist()) - {0})

    reader = vos_reader.VOSReader(str(root))
    np.testing.assert_array_equal(reader.read_annotation("vid", "00005"), ids)
    assert list(reader.video("vid").objects) == object_ids

    data = ml_collections.ConfigDict(
        {
            "augment": False,
            "image_size": (12, 16),
            "border": 3,
            "bin_size": 1,
            "frame_resample": "bilinear",
            "antialias": False,
            "jpeg_downscale": False,
        }
    )
    jpeg = (root / "JPEGImages" / "vid" / "00005.jpg").read_bytes()
    u = np.zeros(augment.NUM_UNIFORMS)
    for obj in object_ids:
        _, masks, _ = augment.make_clip([jpeg], [png], obj, u, (12, 16), data, 1, "video vid")
        np.testing.assert_array_equal(masks[0, ..., 0], ids == obj)

    # Ground truth as given, predictions as exact palette PNGs of the ids: perfect scores on
    # exactly the expected objects only if scoring decodes the ground truth to the same ids.
    pred_dir = tmp_path / "pred" / "vid"
    os.makedirs(pred_dir)
    for frame in ("00000", "00005", "00010"):
        annotations.write(str(pred_dir / f"{frame}.png"), ids)
    scores = folders.score_video_dir(
        str(pred_dir), str(root / "Annotations" / "vid"), include_first_last=True
    )
    assert sorted(scores) == object_ids
    for obj in object_ids:
        np.testing.assert_array_equal(scores[obj].j, [1.0, 1.0, 1.0])
        np.testing.assert_array_equal(scores[obj].f, [1.0, 1.0, 1.0])


def test_errors_name_the_file(synthetic, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        vos_reader.VOSReader(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no JPEGImages"):
        vos_reader.VOSReader(str(tmp_path))
    split_dir = str(tmp_path / "train")
    shutil.copytree(synthetic.train, split_dir)
    reader = vos_reader.VOSReader(split_dir)
    name = reader.video_names()[0]
    with pytest.raises(FileNotFoundError, match="99999.jpg"):
        reader.read_frame(name, "99999")
    with pytest.raises(FileNotFoundError, match="99999.png"):
        reader.read_annotation(name, "99999")
    with open(os.path.join(split_dir, "meta.json"), "w") as f:
        json.dump({"videos": {name: {"objects": {"x": {"frames": ["00000"]}}}}}, f)
    with pytest.raises(ValueError, match=f"meta.json videos/{name}/objects/x"):
        vos_reader.VOSReader(split_dir)
    with open(os.path.join(split_dir, "meta.json"), "w") as f:
        json.dump({"videos": {name: {"objects": {"1": {"frames": ["00000"]}}}}}, f)
    reader = vos_reader.VOSReader(split_dir)
    reader.video(name)
    with pytest.raises(ValueError, match=f"videos/{reader.video_names()[1]}"):
        reader.video(reader.video_names()[1])
    with open(os.path.join(split_dir, "meta.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError, match="meta.json"):
        vos_reader.VOSReader(split_dir)
    davis = str(tmp_path / "davis")
    os.makedirs(os.path.join(davis, "JPEGImages", "480p"))
    with pytest.raises(FileNotFoundError, match="ImageSets"):
        vos_reader.VOSReader(davis)

"""Segmenting your own video (rnn_vos_jax.segment, api.segment_video): mp4 and frame folders in,
palette PNGs and decoded-back overlays out, earlier results reused, refused or resumed, bad input
named. Live sources, stopping and resuming, corrections and the overlay's codec:
test_segment_streams.py.

One tiny HS2S (configs/hs2s.py:demo at 32x64, random fan-in-scaled weights in an orbax
checkpoint) is compiled once for the module; the CLI test builds an equal model, which hits the
same compiled step.
"""

import io
import json
import os

import cv2
import model_testing
import numpy as np
import pytest
from PIL import Image

from rnn_vos_jax import api, segment
from rnn_vos_jax.data import annotations
from rnn_vos_jax.inference import first_masks, object_merge, progress, video_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(ROOT, "configs/hs2s.py:demo_base")
MODEL_SIZE = (32, 64)
SIZE = (48, 80)  # the video's own size: not the model's, so everything is resized both ways
T = 6


def _config():
    c = api.load_config(SPEC)
    c.data.image_size = MODEL_SIZE
    return c


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("segment") / "variables")
    return model_testing.save_random_checkpoint(path, _config().model)


@pytest.fixture(scope="module")
def seg(checkpoint_dir):
    return api.Segmenter.from_checkpoint(checkpoint_dir, _config())


def _ids():
    """uint8[H, W]: object 1 a rectangle, object 2 a disc (sizes chosen to leave an interior)."""
    ids = np.zeros(SIZE, np.uint8)
    ids[8:30, 6:34] = 1
    yy, xx = np.mgrid[: SIZE[0], : SIZE[1]]
    ids[(yy - 28) ** 2 + (xx - 58) ** 2 <= 12**2] = 2
    return ids


def _frames():
    """uint8[T, H, W, 3] with few colours (exact in a GIF): flat bands, two moving blocks."""
    frames = np.zeros((T, *SIZE, 3), np.uint8)
    for t in range(T):
        frames[t, :, :] = (60, 70, 80)
        frames[t, SIZE[0] // 2 :, :] = (90, 100, 110)
        frames[t, 8 + t : 30 + t, 6 + t : 34 + t] = (220, 200, 40)
        frames[t, 18:38, 46 - t : 70 - t] = (40, 200, 220)
    return frames


def _write_mp4(path, frames, fps=10):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, SIZE[::-1])
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


def _write_folder(path, frames, names, ext=".png"):
    os.makedirs(path, exist_ok=True)
    for f, n in zip(frames, names):
        Image.fromarray(f).save(os.path.join(path, n + ext))
    return str(path)


def _write_mask(path, ids):
    annotations.write(str(path), ids)
    return str(path)


def _reference(seg, frames, first):
    """What segment must write: the predictor's probabilities merged as evaluation merges them."""
    ids = sorted(first)
    return [object_merge.merge_probabilities(p, ids) for p in seg.predictor.predict(frames, first)]


def _interior(mask, pixels=3):
    return cv2.erode(mask.astype(np.uint8), np.ones((2 * pixels + 1,) * 2, np.uint8)) > 0


def _blend(frame, ids, obj):
    return 0.5 * frame.astype(np.float64) + 0.5 * annotations.PALETTE[obj]


def test_mp4_with_a_first_mask_gives_pngs_and_an_mp4_overlay(seg, tmp_path, capfd):
    video = _write_mp4(tmp_path / "in.mp4", _frames())
    ids = _ids()
    first = _write_mask(tmp_path / "first.png", ids)
    result = api.segment_video(None, seg, video, first, str(tmp_path / "out"))
    assert "frames/s" in capfd.readouterr().err  # the progress bar
    names = [f"{t:05d}" for t in range(T)]
    assert result.pngs == [str(tmp_path / "out" / "Annotations" / f"{n}.png") for n in names]
    assert result.object_ids == [1, 2] and result.first_frames == {1: "00000", 2: "00000"}
    assert result.overlay == str(tmp_path / "out" / "overlay.mp4") and not result.reused
    written = [annotations.decode(p) for p in result.pngs]
    with Image.open(result.pngs[1]) as im:
        assert im.mode == "P" and im.size == SIZE[::-1]
    np.testing.assert_array_equal(written[0], ids)  # the given mask, at the original size
    decoded = list(video_io.open_frames(video).frames())  # the same decoder segment used
    masks = {o: (0, ids == o) for o in (1, 2)}
    for got, want in zip(written, _reference(seg, decoded, masks), strict=True):
        np.testing.assert_array_equal(got, want)

    capture = cv2.VideoCapture(result.overlay)
    shown = []
    while True:
        ok, f = capture.read()
        if not ok:
            break
        shown.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    assert len(shown) == T and shown[0].shape == (*SIZE, 3)
    for obj in (1, 2):  # mask interiors in the object's palette colour, blended 1:1 (mp4v: lossy)
        inside = _interior(ids == obj)
        want = _blend(decoded[0], ids, obj)[inside].mean(0)
        np.testing.assert_allclose(shown[0][inside].mean(0), want, atol=10)
    outside = _interior(ids == 0, 4)
    np.testing.assert_allclose(
        shown[0][outside].mean(0), decoded[0][outside].mean(0).astype(float), atol=6
    )
    assert not os.path.exists(tmp_path / "out" / "overlay.partial.mp4")


def test_cli_on_a_frame_folder_with_objects_appearing_later(checkpoint_dir, seg, tmp_path):
    frames, ids = _frames(), _ids()
    names = [f"img{n}" for n in range(8, 8 + T)]  # img10 sorts after img9: numbers as numbers
    folder = _write_folder(tmp_path / "frames", frames, names)
    masks = tmp_path / "masks"
    masks.mkdir()
    _write_mask(masks / "img8.png", np.where(ids == 1, 1, 0).astype(np.uint8))
    _write_mask(masks / "img10.png", np.where(ids == 2, 2, 0).astype(np.uint8))
    out = tmp_path / "out"
    argv = [
        "segment",
        f"--config={SPEC}",
        f"--config.data.image_size=({MODEL_SIZE[0]},{MODEL_SIZE[1]})",
        f"--checkpoint={checkpoint_dir}",
        f"--video={folder}",
        f"--masks={masks}",
        f"--output={out}",
        "--overlay=gif",
        "--fps=5",
        "--noprogress",
    ]
    result = segment.main(argv)
    assert [os.path.basename(p) for p in result.pngs] == [n + ".png" for n in names]
    assert result.first_frames == {1: "img8", 2: "img10"}
    assert sorted(os.listdir(out)) == ["Annotations", "overlay.gif", "segment.json"]
    written = [annotations.decode(p) for p in result.pngs]
    first = {1: (0, ids == 1), 2: (2, ids == 2)}
    for got, want in zip(written, _reference(seg, list(frames), first), strict=True):
        np.testing.assert_array_equal(got, want)
    assert not np.any(np.stack(written[:2]) == 2) and np.any(written[2] == 2)

    with Image.open(result.overlay) as gif:
        assert gif.n_frames == T and gif.size == SIZE[::-1]
        assert gif.info["duration"] == 200
        gif.seek(2)  # object 2's first frame: its given mask, in green
        shown = np.asarray(gif.convert("RGB"), np.float64)
    for obj in (1, 2):
        inside = _interior(written[2] == obj, 2)
        if inside.any():
            want = np.round(_blend(frames[2], written[2], obj)[inside])
            np.testing.assert_allclose(shown[inside], want, atol=3)
    # Contour: mask pixels with a background 4-neighbour, in the full palette colour.
    mask = (written[2] == 2).astype(np.uint8)
    boundary = (mask > 0) & (
        cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))) == 0
    )
    exact = np.abs(shown[boundary] - annotations.PALETTE[2]).max(axis=1) <= 3
    assert boundary.sum() > 20 and exact.mean() > 0.9, (boundary.sum(), exact.mean())


def test_earlier_results_reused_refused_or_overwritten(seg, tmp_path):
    frames, ids = _frames()[:3], _ids()
    folder = _write_folder(tmp_path / "frames", frames, ["a", "b", "c"], ".jpg")
    first = _write_mask(tmp_path / "first.png", ids)
    out = str(tmp_path / "out")
    run = {"overlay": "none", "show_progress": False}
    done = api.segment_video(None, seg, folder, first, out, **run)
    stamps = [os.stat(p).st_mtime_ns for p in done.pngs]
    again = api.segment_video(None, seg, folder, first, out, **run)  # same inputs: reused
    assert again.reused and again.pngs == done.pngs
    assert [os.stat(p).st_mtime_ns for p in done.pngs] == stamps

    other = _write_mask(tmp_path / "other.png", (ids * 2).astype(np.uint8))  # ids 2 and 4
    with pytest.raises(FileExistsError, match="finished run with other inputs.*--overwrite"):
        api.segment_video(None, seg, folder, other, out, **run)
    redone = api.segment_video(None, seg, folder, other, out, overwrite=True, **run)
    assert not redone.reused and redone.object_ids == [2, 4]
    np.testing.assert_array_equal(annotations.decode(redone.pngs[0]), ids * 2)

    os.remove(redone.record)  # as if stopped before the end
    with pytest.raises(FileExistsError, match=r"unfinished run .*\(3 PNGs in"):
        api.segment_video(None, seg, folder, other, out, **run)


def test_a_frame_that_fails_to_decode_keeps_the_frames_before_it(seg, tmp_path):
    frames, ids = _frames()[:4], _ids()
    folder = _write_folder(tmp_path / "frames", frames, ["0", "1", "2", "3"])
    with open(os.path.join(folder, "2.png"), "rb") as f:
        data = f.read()
    with open(os.path.join(folder, "2.png"), "wb") as f:
        f.write(data[: len(data) // 2])  # the header reads, the pixels do not
    first = _write_mask(tmp_path / "first.png", ids)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"cannot read frame .*2\.png"):
        api.segment_video(None, seg, folder, first, str(out), show_progress=False)
    assert sorted(os.listdir(out / "Annotations")) == ["0.png", "1.png"]
    assert sorted(os.listdir(out)) == ["Annotations", "state"]  # no partial overlay, no record
    with open(out / "state" / "tracker.json") as f:
        assert json.load(f)["frame_index"] == 2  # saved at the last whole frame
    # The same command again resumes at frame 2, which still does not decode.
    with pytest.raises(ValueError, match=r"cannot read frame .*2\.png"):
        api.segment_video(None, seg, folder, first, str(out), show_progress=False)


def test_bad_inputs_are_named(seg, tmp_path):
    frames, ids = _frames()[:3], _ids()
    folder = _write_folder(tmp_path / "frames", frames, ["00000", "00001", "00002"])
    video = _write_mp4(tmp_path / "in.mp4", frames)
    first = _write_mask(tmp_path / "first.png", ids)
    out = str(tmp_path / "out")

    def run(v=folder, m=first, **kw):
        return api.segment_video(None, seg, str(v), str(m), out, show_progress=False, **kw)

    # Videos: unreadable, empty, missing; frame folders: empty, mixed sizes.
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(ValueError, match=r"cannot read video .*text\.mp4"):
        run(tmp_path / "text.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match=r"video .*empty\.mp4 is empty"):
        run(tmp_path / "empty.mp4")
    with pytest.raises(FileNotFoundError, match="video not found"):
        run(tmp_path / "missing.mp4")
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match=r"frame folder .*none is empty"):
        run(tmp_path / "none")
    mixed = _write_folder(tmp_path / "mixed", frames, ["a", "b", "c"])
    Image.fromarray(frames[0][:40]).save(os.path.join(mixed, "b.png"))
    with pytest.raises(
        ValueError, match=r"frame .*b\.png is 40x80 .* first frame .*a\.png is 48x80"
    ):
        run(mixed)

    # Masks: other size (both sizes named), no object, colours outside the palette.
    small = _write_mask(tmp_path / "small.png", ids[:40, :60])
    with pytest.raises(ValueError, match=r"mask .*small\.png is 40x60 .* frames of .* are 48x80"):
        run(m=small)
    blank = _write_mask(tmp_path / "blank.png", np.zeros(SIZE, np.uint8))
    with pytest.raises(ValueError, match=r"mask .*blank\.png has no object"):
        run(m=blank)
    rgb = np.zeros((*SIZE, 3), np.uint8)
    rgb[ids == 1] = (255, 0, 0)  # pure red is not a DAVIS colour
    Image.fromarray(rgb).save(tmp_path / "red.png")
    with pytest.raises(ValueError, match=r"red\.png: RGB colours .* not in the DAVIS palette"):
        run(m=tmp_path / "red.png")
    with pytest.raises(FileNotFoundError, match="masks not found"):
        run(m=tmp_path / "nothing.png")

    # Mask folders: names that are not frames, past the end, empty masks only.
    masks = tmp_path / "masks"
    masks.mkdir()
    _write_mask(masks / "00000.png", ids)
    _write_mask(masks / "frame_1.png", ids)
    with pytest.raises(ValueError, match=r"\['frame_1.png'\]; the frames are named 00000 .. 00002"):
        run(m=masks)
    os.remove(masks / "frame_1.png")
    _write_mask(masks / "7.png", ids)  # a video file's frame 7: numbers name frames
    with pytest.raises(ValueError, match=r"7\.png'\] name frames past the end .* \(3 frames\)"):
        run(v=video, m=masks)
    empty_masks = tmp_path / "empty_masks"
    empty_masks.mkdir()
    _write_mask(empty_masks / "00001.png", np.zeros(SIZE, np.uint8))
    with pytest.raises(ValueError, match="no PNG in mask folder .* has no object"):
        run(m=empty_masks)
    with pytest.raises(ValueError, match="overlay must be one of"):
        run(overlay="avi")
    assert not os.path.exists(out)  # nothing was started


def test_mask_decoding_rules(tmp_path):
    folder = _write_folder(tmp_path / "frames", _frames()[:2], ["a", "b"])
    source = video_io.open_frames(folder)
    ids = _ids()
    rgb = annotations.PALETTE[ids]  # palette colours as RGB: (128, 0, 0) = 1, (0, 128, 0) = 2
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    plan = first_masks.read_masks(str(tmp_path / "rgb.png"), source)
    assert plan.object_ids == [1, 2] and plan.files == {0: str(tmp_path / "rgb.png")}
    np.testing.assert_array_equal(plan.first_masks()[2][1], ids == 2)
    Image.fromarray(((ids == 1) * 255).astype(np.uint8), "L").save(tmp_path / "grey.png")
    first = first_masks.read_masks(str(tmp_path / "grey.png"), source).first_masks()
    assert list(first) == [1] and first[1][0] == 0
    np.testing.assert_array_equal(first[1][1], ids == 1)
    void = np.where(ids == 1, 255, ids).astype(np.uint8)  # 255 is void, not an object
    plan = first_masks.read_masks(_write_mask(tmp_path / "void.png", void), source)
    assert plan.object_ids == [2] and plan.corrections == []


def test_own_progress_bar_shows_rate_and_eta():
    stream = io.StringIO()
    bar = progress._OwnBar(total=4, unit="frames", desc="segment", stream=stream)
    for _ in range(4):
        bar.update()
    bar.close()
    text = stream.getvalue()
    assert "segment: 4/4 frames" in text and "frames/s" in text and "ETA 0:00:00" in text

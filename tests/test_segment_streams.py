"""`segment` on streams and long runs: stopped by SIGTERM and resumed (a file, and a live stream
that goes on with its next frames), YUV4MPEG2 on stdin (whole and cut short), a network source
OpenCV reads (HTTP on 127.0.0.1), corrections in the masks folder, an offline family (whole
clips; nothing to resume or correct), and the overlay's codec (H.264, decoded back with PyAV).

The model is test_segment's tiny HS2S (it feeds its previous mask back, so a correction goes
through Family.fed_back_mask); its checkpoint is saved once for the module.
"""

import contextlib
import functools
import http.server
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import av
import cv2
import model_testing
import numpy as np
import pytest
import test_segment as own  # its video, masks and model config (a module: no tests collected)
from PIL import Image

from rnn_vos_jax import api, models, segment
from rnn_vos_jax.data import annotations
from rnn_vos_jax.inference import overlay_video, y4m


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("streams") / "variables")
    return model_testing.save_random_checkpoint(path, own._config().model)


@pytest.fixture(scope="module")
def seg(checkpoint_dir):
    return api.Segmenter.from_checkpoint(checkpoint_dir, own._config())


def _argv(checkpoint_dir, video, masks, out, *more):
    return [
        "segment",
        f"--config={own.SPEC}",
        f"--config.data.image_size=({own.MODEL_SIZE[0]},{own.MODEL_SIZE[1]})",
        f"--checkpoint={checkpoint_dir}",
        f"--video={video}",
        f"--masks={masks}",
        f"--output={out}",
        "--noprogress",
        *more,
    ]


def _pngs(out):
    """{name: bytes} of the PNGs a run wrote."""
    ann = os.path.join(out, "Annotations")
    return {n: open(os.path.join(ann, n), "rb").read() for n in sorted(os.listdir(ann))}


def _names(n):
    return [f"{t:05d}" for t in range(n)]


def _mp4_frames(path):
    """(codec name, pixel format, (H, W) coded, uint8[N, H, W, 3] RGB frames) of an mp4."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        codec, fmt = stream.codec_context.name, stream.codec_context.pix_fmt
        size = (stream.codec_context.height, stream.codec_context.width)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return codec, fmt, size, np.stack(frames)


def test_overlay_is_h264_yuv420p_with_odd_sizes_and_decodes_back(tmp_path):
    rng = np.random.default_rng(0)
    frames = np.zeros((5, 47, 81, 3), np.uint8)  # odd height and width
    for t in range(5):
        frames[t] = rng.integers(0, 256, 3, dtype=np.uint8)  # flat colours: exact-ish in H.264
        frames[t, 10:30, 20 + t : 50 + t] = (200, 40, 90)
    path = str(tmp_path / "o.mp4")
    with overlay_video.OverlayWriter(path, "mp4", fps=12) as out:
        for f in frames:
            out.write(f)
    codec, fmt, coded, decoded = _mp4_frames(path)
    assert (codec, fmt, coded, decoded.shape[0]) == ("h264", "yuv420p", (48, 82), 5)
    with av.open(path) as container:
        video = container.streams.video[0]
        assert video.average_rate == 12 and video.codec_context.profile == "High"
    back = np.stack(list(overlay_video.read_frames(path, (47, 81))))
    assert back.shape == frames.shape  # the padding row and column cropped off
    inner = np.s_[:, 2:-3, 2:-3]  # away from the chroma blur at the padded edges
    assert np.abs(back[inner].astype(int) - frames[inner]).mean() < 3
    assert not os.path.exists(tmp_path / "o.partial.mp4")


def test_sigterm_at_a_random_frame_then_rerun_gives_the_uninterrupted_results(
    checkpoint_dir, seg, tmp_path
):
    frames = np.concatenate([own._frames()] * 5)  # 30 frames: a run long enough to stop
    folder = own._write_folder(tmp_path / "frames", frames, _names(len(frames)))
    first = own._write_mask(tmp_path / "first.png", own._ids())
    whole = tmp_path / "whole"
    api.segment_video(None, seg, folder, first, str(whole), "mp4", show_progress=False)

    out = tmp_path / "out"
    argv = _argv(checkpoint_dir, folder, first, out, "--overlay=mp4", "--state_every=1")
    stop_after = random.Random().randint(1, 8)  # PNGs on disk before the signal is sent
    process = subprocess.Popen(
        [sys.executable, "-m", "rnn_vos_jax.segment", *argv[1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ann = out / "Annotations"
    while process.poll() is None and (not ann.is_dir() or len(os.listdir(ann)) < stop_after):
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 143, err
    stopped_at = len([n for n in os.listdir(ann) if n.endswith(".png")])
    assert stop_after <= stopped_at < len(frames), (stop_after, stopped_at)
    assert f"Run the same command again to go on from frame {stopped_at}" in err
    assert sorted(os.listdir(out)) == ["Annotations", "state"]  # no overlay.partial.mp4

    with pytest.raises(FileExistsError, match="unfinished run with another overlay"):
        api.segment_video(None, seg, folder, first, str(out), "gif")  # not the same command
    result = segment.main(argv)  # the same command again
    assert _pngs(out) == _pngs(whole)
    assert result.record_data["resumed"] == [
        {"frame": f"{stopped_at:05d}", "frame_index": stopped_at}
    ]
    assert sorted(os.listdir(out)) == ["Annotations", "overlay.mp4", "segment.json"]
    # Frames before the stop were drawn again from the video and their PNGs: the same H.264
    # file, byte for byte.
    with open(out / "overlay.mp4", "rb") as a, open(whole / "overlay.mp4", "rb") as b:
        assert a.read() == b.read()


def _y4m(frames):
    """YUV4MPEG2 bytes of uint8[T, H, W, 3] RGB frames: 4:2:0, BT.601 limited range (what
    ffmpeg -pix_fmt yuv420p -f yuv4mpegpipe writes), chroma averaged over 2x2 blocks."""
    h, w = frames.shape[1:3]
    out = [f"YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n".encode()]
    for f in frames.astype(np.float64):
        r, g, b = f[..., 0], f[..., 1], f[..., 2]
        y = 0.299 * r + 0.587 * g + 0.114 * b
        u, v = (b - y) / 1.772, (r - y) / 1.402
        planes = [16 + y * 219 / 255]
        for c in (u, v):
            c = c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
            planes.append(128 + c * 224 / 255)
        data = b"".join(np.clip(np.rint(p), 0, 255).astype(np.uint8).tobytes() for p in planes)
        out.append(b"FRAME\n" + data)
    return b"".join(out)


def _stdin_pipe(monkeypatch, data: bytes):
    """Standard input from a real pipe that a thread writes `data` into, then closes."""
    read, write = os.pipe()

    def feed():
        with os.fdopen(write, "wb") as pipe:
            for i in range(0, len(data), 4096):  # in pieces: the reader sees partial reads
                pipe.write(data[i : i + 4096])
                pipe.flush()

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(os.fdopen(read, "rb")))
    return thread


def test_y4m_on_stdin_equals_the_same_frames_from_a_folder(seg, tmp_path, monkeypatch):
    frames = own._frames()
    data = _y4m(frames)
    received = list(y4m.Reader(io.BytesIO(data)).frames())
    # The colour conversion (BT.601, limited range) undone: the frames again, up to rounding,
    # where a pixel's 2x2 chroma block is one colour.
    for got, want in zip(received, frames, strict=True):
        kernel = np.ones((5, 5), np.uint8)
        flat = np.all(cv2.dilate(want, kernel) == cv2.erode(want, kernel), axis=-1)
        assert flat.mean() > 0.5
        assert np.abs(got[flat].astype(int) - want[flat]).max() <= 2
    folder = own._write_folder(tmp_path / "frames", received, _names(len(frames)))
    first = own._write_mask(tmp_path / "first.png", own._ids())
    run = {"overlay": "none", "show_progress": False}
    api.segment_video(None, seg, folder, first, str(tmp_path / "folder"), **run)

    thread = _stdin_pipe(monkeypatch, data)
    result = api.segment_video(None, seg, "-", first, str(tmp_path / "stdin"), **run)
    thread.join()
    assert [os.path.basename(p) for p in result.pngs] == [n + ".png" for n in _names(own.T)]
    assert _pngs(tmp_path / "stdin") == _pngs(tmp_path / "folder")
    with open(result.record) as f:
        record = json.load(f)
    assert record["inputs"]["video"] == ["-", None] and record["num_frames"] == own.T

    # A stream that breaks inside frame 3: an error naming it; the frames before it stay.
    frame_bytes = (len(data) - data.index(b"FRAME")) // own.T
    cut = data[: data.index(b"FRAME") + 3 * frame_bytes + frame_bytes // 2]
    thread = _stdin_pipe(monkeypatch, cut)
    broken = tmp_path / "broken"
    with pytest.raises(ValueError, match=r"stdin: the stream ended inside frame 3 \(00003\)"):
        api.segment_video(None, seg, "-", first, str(broken), **run)
    thread.join()
    assert _pngs(broken) == {n: b for n, b in _pngs(tmp_path / "folder").items() if n < "00003"}


def test_a_network_source_through_opencv(seg, tmp_path):
    """An MJPEG .avi served over HTTP on 127.0.0.1 (OpenCV's FFmpeg reads it as a stream)."""
    frames = own._frames()
    video = tmp_path / "served" / "v.avi"
    video.parent.mkdir()
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, own.SIZE[::-1])
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    handler = functools.partial(QuietHandler, directory=str(video.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    first = own._write_mask(tmp_path / "first.png", own._ids())
    run = {"overlay": "none", "show_progress": False}
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v.avi"
        result = api.segment_video(
            None, seg, url, first, str(tmp_path / "url"), max_frames=4, **run
        )
    finally:
        server.shutdown()
    api.segment_video(None, seg, str(video), first, str(tmp_path / "file"), **run)
    assert result.num_frames == 4  # --max_frames
    assert _pngs(tmp_path / "url") == {
        n: b for n, b in _pngs(tmp_path / "file").items() if n < "00004"
    }


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no request lines in the test output
        pass


def test_a_later_mask_of_a_tracked_object_is_a_correction(checkpoint_dir, seg, tmp_path):
    frames, ids = own._frames(), own._ids()
    folder = own._write_folder(tmp_path / "frames", frames, _names(own.T))
    masks = tmp_path / "masks"
    masks.mkdir()
    own._write_mask(masks / "00000.png", ids)
    plain = tmp_path / "plain"
    api.segment_video(None, seg, folder, str(masks), str(plain), overlay="none")

    fixed = np.zeros(own.SIZE, bool)  # object 2 somewhere else on frame 3
    fixed[30:46, 4:30] = True
    own._write_mask(masks / "00003.png", np.where(fixed, 2, 0).astype(np.uint8))
    out = tmp_path / "corrected"
    result = segment.main(_argv(checkpoint_dir, folder, masks, out, "--overlay=none"))
    before, after = _pngs(plain), _pngs(out)
    for name in _names(3):  # frames before the correction: exactly as without it
        assert after[name + ".png"] == before[name + ".png"]
    written = [annotations.decode(p) for p in result.pngs]
    np.testing.assert_array_equal(written[3] == 2, fixed)  # the corrected mask is written
    assert result.record_data["corrections"] == [
        {"frame": "00003", "object": 2, "mask_file": str(masks / "00003.png")}
    ]
    # The same through the API: the tracker continues from the corrected mask.
    tracker = seg.start(frames[0], ids)
    for t in range(1, own.T):
        probs = tracker.step(frames[t], correct={2: fixed} if t == 3 else None)
        np.testing.assert_array_equal(
            api.merge_probabilities(probs, tracker.object_ids), written[t]
        )
    assert not np.array_equal(written[4], annotations.decode(str(plain / "Annotations/00004.png")))


@contextlib.contextmanager
def _signal_after(annotations_dir, count, signum):
    """Sends `signum` to this process once `count` PNGs are in `annotations_dir`. A signal that
    comes after the run restored the handlers hits a no-op one, not pytest."""
    old = signal.signal(signum, lambda *_: None)

    def send():
        while not annotations_dir.is_dir() or len(os.listdir(annotations_dir)) < count:
            time.sleep(0.01)
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(timeout=10)
        signal.signal(signum, old)


def test_a_live_run_stopped_goes_on_with_the_next_frames(seg, tmp_path, monkeypatch):
    """SIGTERM while stdin waits for frame 3: the state and the overlay so far are kept; the
    rerun numbers the next stream's frames from 3 on and carries the overlay over."""
    frames = own._frames()
    data = _y4m(frames)
    header, body = data.split(b"\n", 1)
    frame_bytes = len(body) // own.T
    first = own._write_mask(tmp_path / "first.png", own._ids())
    received = list(y4m.Reader(io.BytesIO(data)).frames())
    folder = own._write_folder(tmp_path / "frames", received, _names(own.T))
    whole = tmp_path / "whole"
    api.segment_video(None, seg, folder, first, str(whole), "gif", show_progress=False)

    read, write = os.pipe()
    with os.fdopen(write, "wb", buffering=0) as pipe:  # open: the stream waits for frame 3
        pipe.write(header + b"\n" + body[: 3 * frame_bytes])
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(os.fdopen(read, "rb")))
        out = tmp_path / "out"
        stop = _signal_after(out / "Annotations", 3, signal.SIGTERM)
        with stop, pytest.raises(SystemExit) as stopped:
            api.segment_video(None, seg, "-", first, str(out), "gif", show_progress=False)
    assert stopped.value.code == 143
    assert sorted(os.listdir(out)) == ["Annotations", "overlay.partial.gif", "state"]

    _stdin_pipe(monkeypatch, header + b"\n" + body[3 * frame_bytes :]).join()
    result = api.segment_video(None, seg, "-", first, str(out), "gif", show_progress=False)
    assert _pngs(out) == _pngs(whole)
    assert result.record_data["resumed"] == [{"frame": "00003", "frame_index": 3}]
    with Image.open(out / "overlay.gif") as gif:
        assert gif.n_frames == own.T
    assert sorted(os.listdir(out)) == ["Annotations", "overlay.gif", "segment.json"]


def test_an_offline_family_segments_whole_clips_and_refuses_what_needs_a_state(tmp_path):
    frames, ids = own._frames()[:3], own._ids()
    fam = models.family("bi_hs2s")
    model = models.build({"name": "bi_hs2s", **fam.tiny})
    clip, masks = model_testing.clip(1, 2, *own.MODEL_SIZE)
    offline = api.Segmenter(
        model, model_testing.random_variables(model, clip, masks), own.MODEL_SIZE
    )
    folder = own._write_folder(tmp_path / "frames", frames, _names(3))
    first = own._write_mask(tmp_path / "first.png", ids)
    result = api.segment_video(None, offline, folder, first, str(tmp_path / "out"), "gif")
    want = own._reference(offline, list(frames), {o: (0, ids == o) for o in (1, 2)})
    for png, ids_t in zip(result.pngs, want, strict=True):
        np.testing.assert_array_equal(annotations.decode(png), ids_t)
    with Image.open(result.overlay) as gif:
        assert gif.n_frames == 3

    masks = tmp_path / "masks"
    masks.mkdir()
    own._write_mask(masks / "00000.png", ids)
    own._write_mask(masks / "00002.png", ids)  # both objects again: corrections
    with pytest.raises(ValueError, match="family 'bi_hs2s' predicts whole clips .* corrections"):
        api.segment_video(None, offline, folder, str(masks), str(tmp_path / "fixed"))


def test_ctrl_c_then_rerun_without_an_overlay(seg, tmp_path):
    """Without an overlay to draw again, the rerun reads the frame folder on from frame k."""
    frames = np.concatenate([own._frames()] * 4)
    folder = own._write_folder(tmp_path / "frames", frames, _names(len(frames)))
    first = own._write_mask(tmp_path / "first.png", own._ids())
    run = {"overlay": "none", "show_progress": False, "state_every": 1}
    whole = api.segment_video(None, seg, folder, first, str(tmp_path / "whole"), **run)
    out = tmp_path / "out"
    stop = _signal_after(out / "Annotations", 3, signal.SIGINT)  # Ctrl-C
    with stop, pytest.raises(SystemExit) as stopped:
        api.segment_video(None, seg, folder, first, str(out), **run)
    assert stopped.value.code == 130
    k = len(os.listdir(out / "Annotations"))
    result = api.segment_video(None, seg, folder, first, str(out), **run)
    assert result.record_data["resumed"] == [{"frame": f"{k:05d}", "frame_index": k}]
    assert _pngs(out) == _pngs(whole.output)

"""Round trips of the scoring CLI on PNG folders."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from rnn_vos_jax import metrics, score


def _save(path, ids, palette=True):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = Image.fromarray(ids.astype(np.uint8), "P" if palette else "L")
    if palette:
        im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    im.save(path)


def _write_set(root):
    """Two videos: 'a' with objects 1 (all frames) and 2 (from frame 2); 'b' with object 1."""
    rng = np.random.default_rng(0)
    gts = {}
    for video, n, objs in (("a", 5, {1: 0, 2: 2}), ("b", 4, {1: 0})):
        gts[video] = []
        for t in range(n):
            gt = np.zeros((16, 20), np.uint8)
            gt[2 + t : 8 + t, 3:9] = 1
            if 2 in objs and t >= objs[2]:
                gt[10:14, 12:18] = 2
            pred = gt.copy()
            pred[rng.random(gt.shape) < 0.05] = 0
            name = f"{t * 5:05d}"
            _save(f"{root}/ann/{video}/{name}.png", gt)
            _save(f"{root}/pred/{video}/{name}.png", pred, palette=video == "a")
            gts[video].append((gt, pred))
    meta = {
        "videos": {
            "a": {
                "objects": {
                    "1": {"category": "dog", "frames": ["00000", "00005"]},
                    "2": {"category": "zebra", "frames": ["00010", "00015"]},
                }
            },
            "b": {"objects": {"1": {"category": "dog", "frames": ["00000"]}}},
        }
    }
    with open(f"{root}/meta.json", "w") as f:
        json.dump(meta, f)
    with open(f"{root}/train_info.json", "w") as f:
        json.dump({"categories": {"dog": 3, "cat": 1}}, f)
    return gts


def test_score_cli_round_trip(tmp_path):
    gts = _write_set(tmp_path)
    out_file = tmp_path / "out" / "metrics.json"
    args = [
        f"--predictions={tmp_path}/pred",
        f"--annotations={tmp_path}/ann",
        f"--meta={tmp_path}/meta.json",
        f"--train_meta={tmp_path}/train_info.json",
        f"--output={out_file}",
        "--baseline",
    ]
    result = score.main(args)
    written = json.loads(out_file.read_text())
    assert written["JF_mean"] == pytest.approx(result["JF_mean"])
    for key in ("J_mean", "F_mean", "JF_mean", "num_objects", "per_object", "per_video"):
        assert key in written
    assert set(written["per_object"]) == {"a/1", "a/2", "b/1"}
    assert written["num_objects"] == 3
    assert written["seen"]["num_objects"] == 2 and written["unseen"]["num_objects"] == 1
    # Recompute object a/2 directly: first frame 2, scored frames 3 (frame 4 is the last).
    gt, pred = gts["a"][3]
    want = metrics.jaccard(gt == 2, pred == 2)
    assert written["per_object"]["a/2"]["J"] == pytest.approx(want)
    assert written["per_object"]["a/2"]["num_frames"] == 1
    assert written["baseline"]["per_object"]["b/1"]["J"] < written["per_object"]["b/1"]["J"]

    # Without meta.json the first frames come from the PNGs themselves: same numbers.
    no_meta = score.score_directory(f"{tmp_path}/pred", f"{tmp_path}/ann")
    assert no_meta["per_object"]["a/2"]["J"] == pytest.approx(want)
    assert no_meta["J_mean"] == pytest.approx(written["J_mean"])
    assert "seen" not in no_meta

    # The real command line, once.
    proc = subprocess.run(
        [sys.executable, "-m", "rnn_vos_jax.score", *args[:2], "--include_first_last"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "JF_mean" in proc.stdout


def test_score_errors_name_the_file(tmp_path):
    _write_set(tmp_path)
    os.remove(tmp_path / "pred" / "a" / "00005.png")
    with pytest.raises(FileNotFoundError, match="00005.png"):
        score.score_directory(f"{tmp_path}/pred", f"{tmp_path}/ann")
    off_palette = np.full((16, 20, 3), (1, 2, 3), np.uint8)  # RGB, but not a DAVIS colour
    Image.fromarray(off_palette).save(tmp_path / "pred" / "a" / "00005.png")
    with pytest.raises(ValueError, match="00005.png.*RGB colours.*not in the DAVIS palette"):
        score.score_directory(f"{tmp_path}/pred", f"{tmp_path}/ann")
    with pytest.raises(ValueError, match="no 'videos'"):
        score.load_meta(f"{tmp_path}/train_info.json")

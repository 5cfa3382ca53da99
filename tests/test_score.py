"""Round trips of the scoring CLI on PNG folders."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from rnn_vos_jax import score
from rnn_vos_jax.data import annotations, meta
from rnn_vos_jax.scoring import folders, metrics


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
    no_meta = folders.score_directory(f"{tmp_path}/pred", f"{tmp_path}/ann")
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
        folders.score_directory(f"{tmp_path}/pred", f"{tmp_path}/ann")
    off_palette = np.full((16, 20, 3), (1, 2, 3), np.uint8)  # RGB, but not a DAVIS colour
    Image.fromarray(off_palette).save(tmp_path / "pred" / "a" / "00005.png")
    with pytest.raises(ValueError, match="00005.png.*RGB colours.*not in the DAVIS palette"):
        folders.score_directory(f"{tmp_path}/pred", f"{tmp_path}/ann")
    with pytest.raises(ValueError, match="train_info.json: expected {'videos'"):
        meta.read(f"{tmp_path}/train_info.json")


def _toolkit_folder(root):
    """3 DAVIS-2017-style videos (palette ids, void bands of 255 around object 1) and noisy,
    shifted predictions that lose the last object half way: the folder the DAVIS toolkit scored
    for TOOLKIT_CSVS."""
    rng = np.random.default_rng(0)
    for v, (n, k, h, w) in enumerate([(12, 2, 120, 200), (9, 1, 96, 160), (20, 3, 100, 180)]):
        name = f"vid{v}"
        centers = rng.uniform(20, 80, (k, 2))
        yy, xx = np.mgrid[:h, :w]
        for t in range(n):
            gt = np.zeros((h, w), np.uint8)
            for o in range(k):
                cy, cx = centers[o] + t * rng.uniform(0, 3, 2)
                r = 10 + 3 * o
                gt[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = o + 1
            m = gt == 1
            gt[(m ^ np.roll(m, 2, 0)) & (gt == 0)] = 255
            pred = gt.copy()
            pred[pred == 255] = 0
            noise = rng.random((h, w)) < 0.002 * (1 + t % 4)
            pred[noise] = rng.integers(0, k + 1, noise.sum())
            pred = np.roll(pred, int(rng.integers(-3, 4)), axis=1)
            if t > n // 2:
                pred[pred == k] = 0
            for sub, ids in (("ann", gt), ("pred", pred)):
                os.makedirs(root / sub / name, exist_ok=True)
                annotations.write(str(root / sub / name / f"{t:05d}.png"), ids)


# What davisvideochallenge/davis2017-evaluation (commit ac7c43f) computes for _toolkit_folder's
# folders with its semi-supervised DAVISEvaluation, written as its evaluation_method.py writes
# the two CSVs (skimage's disk given as x**2 + y**2 <= r**2). Full precision of its global means:
# J&F 0.5237068296745471, J 0.6054777577836011, J-Recall 0.7785714285714286,
# J-Decay 0.4146938778950513, F 0.4419359015654929, F-Recall 0.43492063492063493,
# F-Decay 0.28053440435960625.
TOOLKIT_CSVS = {
    "global_results-val.csv": (
        "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay\n"
        "0.524,0.605,0.779,0.415,0.442,0.435,0.281\n"
    ),
    "per-sequence_results-val.csv": (
        "Sequence,J-Mean,F-Mean\n"
        "vid0_1,0.774,0.518\nvid0_2,0.511,0.347\nvid1_1,0.404,0.259\n"
        "vid2_1,0.694,0.574\nvid2_2,0.787,0.593\nvid2_3,0.463,0.362\n"
    ),
}


def test_toolkit_numbers_csvs_void_and_workers(tmp_path):
    """Default scoring gives the DAVIS toolkit's numbers (void as background), its two CSVs,
    and the same result from 2 worker processes; ignoring void is the named option."""
    _toolkit_folder(tmp_path)
    pred, ann = str(tmp_path / "pred"), str(tmp_path / "ann")
    result = score.main([f"--predictions={pred}", f"--annotations={ann}", f"--csv_dir={tmp_path}"])
    for name, text in TOOLKIT_CSVS.items():
        assert (tmp_path / name).read_text() == text
    want = {
        "JF_mean": 0.5237068296745471,
        "J_mean": 0.6054777577836011,
        "J_recall": 0.7785714285714286,
        "J_decay": 0.4146938778950513,
        "F_mean": 0.4419359015654929,
        "F_recall": 0.43492063492063493,
        "F_decay": 0.28053440435960625,
    }
    assert {k: result[k] for k in want} == pytest.approx(want, abs=1e-12)
    ignored = folders.score_directory(pred, ann, ignore_void=True)
    assert ignored["J_mean"] > result["J_mean"] + 0.003  # void bands no longer count
    parallel = folders.score_directory(pred, ann, workers=2)
    assert json.dumps(parallel, sort_keys=True) == json.dumps(result, sort_keys=True)


def test_davis2016_greyscale_folders_and_runs_that_score_nothing(tmp_path):
    """DAVIS 2016 as distributed (greyscale 0/255 PNGs) scores one object per video, the same
    as palette PNGs of id 1; a run that scores no object is an error saying why."""
    rng = np.random.default_rng(1)
    for video in ("bear", "camel"):
        for t in range(4):
            gt = np.zeros((24, 32), np.uint8)
            gt[4 + t : 14 + t, 5:20] = 1
            pred = gt.copy()
            pred[rng.random(gt.shape) < 0.1] = 0
            for sub, ids in (("grey/ann", gt), ("grey/pred", pred)):
                _save(f"{tmp_path}/{sub}/{video}/{t:05d}.png", ids * 255, palette=False)
            for sub, ids in (("pal/ann", gt), ("pal/pred", pred)):
                _save(f"{tmp_path}/{sub}/{video}/{t:05d}.png", ids)
    grey = folders.score_directory(f"{tmp_path}/grey/pred", f"{tmp_path}/grey/ann")
    palette = folders.score_directory(f"{tmp_path}/pal/pred", f"{tmp_path}/pal/ann")
    assert sorted(grey["per_object"]) == ["bear/1", "camel/1"]
    assert grey == palette and 0 < grey["J_mean"] < 1

    for video in ("bear", "camel"):  # every ground-truth PNG background
        for t in range(4):
            _save(f"{tmp_path}/empty/{video}/{t:05d}.png", np.zeros((24, 32), np.uint8))
    with pytest.raises(ValueError, match="no object was scored.*holds no object id"):
        folders.score_directory(f"{tmp_path}/grey/pred", f"{tmp_path}/empty")
    with pytest.raises(FileNotFoundError, match="one level too high"):
        folders.score_directory(f"{tmp_path}/grey", f"{tmp_path}/grey")
    for t in (2, 3):  # two frames left: the first and the last, which are not scored
        for sub in ("ann", "pred"):
            for video in ("bear", "camel"):
                os.remove(f"{tmp_path}/grey/{sub}/{video}/{t:05d}.png")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rnn_vos_jax.score",
            f"--predictions={tmp_path}/grey/pred",
            f"--annotations={tmp_path}/grey/ann",
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "no frame left" in proc.stderr and "--include_first_last" in proc.stderr
    assert (
        folders.score_directory(
            f"{tmp_path}/grey/pred", f"{tmp_path}/grey/ann", include_first_last=True
        )["num_objects"]
        == 2
    )

"""The YouTube-VOS submission checker and zip."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from rnn_vos_jax import submission
from rnn_vos_jax.data import annotations
from rnn_vos_jax.scoring import submission as submission_check


@pytest.fixture
def valid(synthetic):
    return synthetic.valid


def test_good_folder_zips_in_the_server_layout(valid, tmp_path):
    """A folder of palette PNGs at the original size (here the ground truth itself) passes; the
    zip lists Annotations/VIDEO/FRAME.png for every frame the server expects, and leaves out
    frames it does not expect."""
    preds = tmp_path / "preds"
    shutil.copytree(os.path.join(valid, "Annotations"), preds)
    video = min(os.listdir(preds))
    shutil.copy(preds / video / "00000.png", preds / video / "00001.png")  # an in-between frame
    with open(os.path.join(valid, "meta.json")) as f:
        meta = json.load(f)["videos"]
    out = tmp_path / "sub" / "submission.zip"
    proc = subprocess.run(
        [
            sys.executable, "-m", "rnn_vos_jax.submission", f"--predictions={preds}",
            f"--meta={valid}/meta.json", f"--output={out}",
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "1 other PNGs left out" in proc.stdout
    with zipfile.ZipFile(out) as archive:
        listing = sorted(archive.namelist())
        first = archive.read(f"Annotations/{video}/00000.png")
    want = sorted(
        f"Annotations/{v}/{f[:-4]}.png"
        for v in meta
        for f in os.listdir(os.path.join(valid, "JPEGImages", v))
    )
    assert listing == want
    listed = {f"Annotations/{v}/{f}.png" for v, e in meta.items() for o in e["objects"].values()
              for f in o["frames"]}  # fmt: skip
    assert listed <= set(listing)
    assert first == (preds / video / "00000.png").read_bytes()


def test_every_problem_listed_and_nothing_written(valid, tmp_path):
    preds = tmp_path / "preds"
    shutil.copytree(os.path.join(valid, "Annotations"), preds)
    a, b, c = sorted(os.listdir(preds))
    os.remove(preds / a / "00005.png")  # missing frame
    ids = annotations.decode(str(preds / b / "00000.png"))
    annotations.write(
        str(preds / b / "00005.png"), np.zeros((ids.shape[0] + 2, ids.shape[1]), np.uint8)
    )
    Image.fromarray(annotations.PALETTE[ids]).save(preds / b / "00000.png")  # RGB colours
    wrong = annotations.decode(str(preds / c / "00000.png"))
    wrong[0, 0] = 9  # no object 9 in any video
    annotations.write(str(preds / c / "00000.png"), wrong)
    out = tmp_path / "submission.zip"
    with pytest.raises(submission_check.SubmissionError) as error:
        submission.main([f"--predictions={preds}", f"--meta={valid}/meta.json", f"--output={out}"])
    problems = error.value.problems
    assert len(problems) == 4, problems
    assert problems[0].startswith(f"{preds / a}: 1 of ") and "00005.png" in problems[0]
    assert f"{preds / b}/00000.png: RGB PNG, not a palette PNG" in problems[1]
    assert f"{preds / b}/00005.png: {ids.shape[1]}x{ids.shape[0] + 2}, the video is" in problems[2]
    assert f"{preds / c}/00000.png: ids [9] are not among the video's objects" in problems[3]
    assert not os.path.exists(out) and os.listdir(tmp_path) == ["preds"]
    shutil.rmtree(preds / c)
    problems, _ = submission_check.check(str(preds), f"{valid}/meta.json")
    assert f"{preds / c}: missing" in problems[-1]

"""benchmarks/ablations.py: its variants are valid configs, its schedule and its RESULTS sections."""

import argparse
from unittest import mock

import ml_collections
import pytest

from benchmarks import ablations
from rnn_vos_jax.configs import hs2s as hs2s_config
from rnn_vos_jax.models import backbones, cells, fusion


def test_every_variant_is_a_config_and_every_registered_block_is_in_a_table():
    args = {arg for rows in ablations.TABLES.values() for _, arg in rows}
    seen = {"cell": set(), "fusion": set(), "references": set(), "backbone": set()}
    for arg in args:
        c = ablations._config(arg)
        assert c.data.image_size == hs2s_config.get_config("demo").data.image_size, arg
        if ablations.split_arg(arg)[0] != "hs2s":
            continue
        seen["cell"].add(c.model.cell)
        seen["fusion"].add(c.model.fusion)
        seen["references"].add(c.model.references)
        seen["backbone"].add(c.model.backbone)
    registries = {"cell": cells, "fusion": fusion, "backbone": backbones}
    for key, registry in registries.items():
        assert seen[key] >= set(registry.REGISTRY.names()), key
    assert seen["references"] == {"both", "first", "previous"}
    for table, rows in ablations.TABLES.items():
        assert rows[0][1] == "" and len(ablations.PAPER[table]) == len(rows)
    # The families table: one row per family config, each a different model family.
    names = [ablations._config(arg).model.name for _, arg in ablations.TABLES["families"]]
    assert len(set(names)) == len(names) == len(ablations.TABLES["families"])
    assert ablations.split_arg("bi_hs2s:") == ("bi_hs2s", "")
    assert ablations.demo_spec("cell=tanh") == "hs2s:demo_base,cell=tanh"
    assert ablations.full_spec("raft_hs2s:resnet101") == "raft_hs2s:resnet101"


def test_shortened_schedule_scales_every_epoch_setting():
    demo = hs2s_config.get_config("demo_base").train
    same = ablations.schedule_overrides(demo.num_epochs)
    assert same["train.lr_decay.after_epoch"] == demo.lr_decay.after_epoch
    assert same["train.scheduled_sampling.slope"] == pytest.approx(demo.scheduled_sampling.slope)
    half = ablations.schedule_overrides(demo.num_epochs // 2)
    assert half["train.num_epochs"] == demo.num_epochs // 2
    freeze = demo.bn_freeze_after_epoch
    assert half["train.bn_freeze_after_epoch"] == (freeze if freeze < 0 else round(freeze / 2))
    # A switched-off setting (< 0) stays off at any length.
    off = ml_collections.ConfigDict(demo.to_dict())
    off.bn_freeze_after_epoch = off.lr_decay.after_epoch = -1
    with mock.patch.object(
        ablations, "_config", lambda arg: ml_collections.ConfigDict({"train": off})
    ):
        short = ablations.schedule_overrides(demo.num_epochs // 4)
    assert short["train.bn_freeze_after_epoch"] == short["train.lr_decay.after_epoch"] == -1
    assert half["train.scheduled_sampling.slope"] == pytest.approx(
        2 * demo.scheduled_sampling.slope
    )
    # Every override names an existing config key.
    config = hs2s_config.get_config("demo_base")
    for key in half:
        node = config
        for part in key.split("."):
            node = node[part]


def test_results_sections_are_replaced_one_table_at_a_time(tmp_path):
    row = {
        "J_seen": 0.5, "J_unseen": 0.25, "F_seen": 0.75, "F_unseen": 0.5, "overall": 0.5,
        "JF": 0.55, "baseline_JF": 0.2, "params_full": 395_759_593, "params_demo": 830_045,
        "steps": 456, "steps_per_sec": 2.0, "rate_source": "timing", "minutes": 4.5,
    }  # fmt: skip
    rows = [(label, row) for label, _ in ablations.TABLES["references"]]
    text = ablations.format_table("references", rows)
    assert "| frame 0 only (HS2S_0) | 50.0 | 25.0 | 75.0 | 50.0 | 50.0 | 55.0 | - |" in text
    assert "395.8M" in text and "J&F 20.0" in text and "| 2.00 |" in text and "*" not in text
    logged = ablations.format_table("references", [rows[0], ("x", {**row, "rate_source": "run"})])
    assert "| 2.00* |" in logged and "logged by the training run" in logged
    # A table with rows left out names them; the paper column stays with its row.
    partial = ablations.format_table("fusion", [("axial attention (HS2S_attn)", row)])
    assert "| 55.0 | 69.1 |" in partial and "Not run yet: GC (authors'), cosine" in partial
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\nkept\n")
    args = argparse.Namespace(epochs=24, seed=0)
    ablations.write_results("references", text, args, str(path))
    ablations.write_results("cells", "cells v1", args, str(path))
    ablations.write_results("references", "references v2", args, str(path))
    doc = path.read_text()
    assert doc.startswith("# Results\n\nkept\n")
    assert doc.count("<!-- ablations:references -->") == 1 and "references v2" in doc
    assert "HS2S_0" not in doc and "cells v1" in doc


def test_pod_commands_cover_every_variant():
    text = ablations.commands(list(ablations.TABLES))
    for rows in ablations.TABLES.values():
        for _, arg in rows:
            module, rest = ablations.split_arg(arg)
            config = f"configs/{module}.py" + (f":{rest}" if rest else "")
            assert f"TPU ZONE {config} " in text

"""HS2S ablation variants (paper B Tables 2b, 4, 5): config arguments and the reference branches.

The cells and fusion blocks themselves are tested in test_cells.py / test_fusion.py and through
the contract test (test_contract.py), which also runs whole tiny HS2S variants.
"""

import jax
import jax.numpy as jnp
import model_testing as mt
import numpy as np
import pytest

from rnn_vos_jax import models
from rnn_vos_jax.configs import hs2s as hs2s_config

BRANCHES = {"first": {"GC", "GCmm0"}, "previous": {"GC_p", "GCmm_1"}}
MERGES = {"GCGC_p", "mm"}


def _tiny(**fields):
    return models.build({"name": "hs2s", **models.family("hs2s").tiny, **fields})


@pytest.mark.parametrize("references", ["first", "previous"])
def test_single_reference_model_has_no_weights_of_the_other_branch(references):
    frames, masks = mt.clip(1, 2, 64, 64)
    both = mt.variable_shapes(_tiny(), frames, masks)["params"]["decoder"]
    model = _tiny(references=references)
    params = mt.variable_shapes(model, frames, masks)["params"]
    other = "previous" if references == "first" else "first"
    assert set(both) - set(params["decoder"]) == BRANCHES[other] | MERGES
    assert BRANCHES[references] <= set(params["decoder"])
    # The reference encoder still exists: it encodes frame 0 (first) or frame t-1 (previous).
    assert set(params) == {"encoder_ref", "encoder", "memory", "skip_memory", "decoder"}
    # The carry holds only what the step reads.
    carry = jax.eval_shape(
        lambda v: model.apply(v, frames[:, 0], masks[:, 0], method="init_carry"),
        mt.variable_shapes(model, frames, masks),
    )
    want = {"memory", "skip_memory", "prev_pred"}
    want |= {"ref", "ref_mid"} if references == "first" else {"prev_frame"}
    assert set(carry) == want


def test_previous_reference_model_sees_frame_0_only_as_the_previous_frame():
    """HS2S_{t-1} matches frame t-1: frame 0 reaches step 2 only through the recurrent state."""
    frames, masks = mt.clip(1, 3, 64, 64)
    model = _tiny(references="previous")
    variables = mt.random_variables(model, frames, masks)
    run = jax.jit(lambda v, f: model.apply(v, f, masks)["logits"])  # teacher forcing
    base = run(variables, frames)
    changed = frames.at[:, 0].set(255 - frames[:, 0])
    out = run(variables, changed)
    assert not np.allclose(out[:, 0], base[:, 0])  # frame 0 is step 1's previous frame
    # Zero recurrent weights: the memories forget, and frame 0 no longer reaches step 2.
    params = jax.tree.map(jnp.zeros_like, variables["params"]["memory"])
    cut = {**variables, "params": {**variables["params"], "memory": params}}
    params = jax.tree.map(jnp.zeros_like, variables["params"]["skip_memory"])
    cut["params"] = {**cut["params"], "skip_memory": params}
    mt.assert_close(run(cut, changed)[:, 1], run(cut, frames)[:, 1])


def test_config_arguments_set_the_blocks_and_combine_with_demo():
    c = hs2s_config.get_config("demo,cell=tt_lstm,fusion=axial,references=first")
    assert (c.model.cell, c.model.fusion, c.model.references) == ("tt_lstm", "axial", "first")
    assert c.model.skip_cell == "authors" and c.demo.enabled and c.model.width_divisor == 8
    base = hs2s_config.get_config("demo_base,cell=tt_lstm")
    assert base.model.cell == "tt_lstm" and base.demo.enabled and base.model.width_divisor == 16
    c = hs2s_config.get_config("resnet101,skip_cell=tanh")
    assert c.model.backbone == "resnet101" and c.model.skip_cell == "tanh"
    assert hs2s_config.get_config("backbone=vgg16").model.backbone == "vgg16"
    default = hs2s_config.get_config()
    assert (default.model.cell, default.model.skip_cell, default.model.fusion) == (
        "authors",
        "authors",
        "gc",
    )
    assert default.model.references == "both"
    # The config takes any name (it imports no model code); the model refuses unknown ones where
    # it builds them, listing the known names.
    for bad, known in [
        ("cell=gru", "tt_lstm"),
        ("fusion=dot", "cosine"),
        ("references=last", "previous"),
        ("backbone=resnet18", "resnet101"),
    ]:
        key, value = bad.split("=")
        model_config = hs2s_config.get_config(bad).model
        assert model_config[key] == value
        tiny = {**model_config.to_dict(), **models.family("hs2s").tiny}
        with pytest.raises(
            ValueError, match=f"Unknown config.model.{key} '{value}'; known: .*{known}"
        ):
            models.expected_variables(models.build(tiny))


def test_unknown_references_value_is_an_error_listing_the_known_ones():
    frames, masks = mt.clip(1, 2, 64, 64)
    with pytest.raises(ValueError, match="references 'last'; known: \\['both', 'first'"):
        mt.variable_shapes(_tiny(references="last"), frames, masks)


def test_backbone_remat_reaches_the_backbone_blocks_or_is_refused():
    frames, masks = mt.clip(1, 2, 64, 64)
    model = _tiny(backbone="axial_s", backbone_remat=True)
    variables = mt.variable_shapes(model, frames, masks)
    bound = model.bind(variables)
    assert bound.encoder.trunk.remat and bound.encoder_ref.trunk.remat
    assert not _tiny(backbone="axial_s").bind(variables).encoder.trunk.remat
    with pytest.raises(ValueError, match="'resnet50' has no per-block rematerialisation"):
        mt.variable_shapes(_tiny(backbone_remat=True), frames, masks)
    assert hs2s_config.get_config().model.backbone_remat is False

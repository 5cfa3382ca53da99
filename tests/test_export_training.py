"""The sharded bfloat16 training step of every family lowers for TPU and GPU on this CPU machine.

Each family's tiny model in bfloat16, its jitted train step (training/train_state.py) over the 8
fake CPU devices of conftest.py, with parameters replicated and under FSDP (a threshold low
enough that tiny kernels are split), exported for 'tpu' and 'cuda' with inference/exported.py's
`export`: nothing is compiled, so a code path only a CPU takes, or a sharding that works on one
device only, fails here instead of on a pod. The exported step carries its shardings: the batch
split on 'data', parameters (and Adam's moments) replicated or in the FSDP layout; and its
convolutions are XLA's with JAX's own gradients, not the CPU's NHWC rewrite of looped scans
(models/conv_lowering.py).
"""

import functools
import re

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec

from rnn_vos_jax import models
from rnn_vos_jax.configs import hs2s as hs2s_config
from rnn_vos_jax.inference import exported
from rnn_vos_jax.training import schedules, sharding, train_state

FAMILIES = sorted(f.name for f in models.families())
PLATFORMS = ("tpu", "cuda")
FSDP = sharding.Fsdp(min_size=256)
SIZE, BATCH, CLIP = (32, 64), 8, 3  # 2 predicted frames: the time scan is a loop
# A forward convolution (NHWC x HWIO), and the weight and input gradients JAX's own transpose
# rules give it: a trained layer's convolution has at least one of them, so with XLA's lowering
# the gradient layouts outnumber the forward one (RAFT's frozen flow layers have none).
# conv_lowering's CPU rewrite of looped convolutions ('nhwc_grads') writes its gradients in the
# forward layout: there the forward layout outnumbers them several times over.
FORWARD = "[b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f]"
GRADIENTS = ("[f, 0, 1, b]x[i, 0, 1, o]->[0, 1, b, f]", "[b, 0, 1, f]x[0, 1, o, i]->[b, 0, 1, f]")


@functools.cache
def _setup(name):
    config = hs2s_config.get_config()
    model = models.build({"name": name, **models.family(name).tiny, "dtype": "bfloat16"})
    schedule = schedules.learning_rate_fn(config.train, 2.0)
    tx = train_state.make_optimizer(config.train, schedule)

    def state_fn():
        variables = models.init_variables(model, jax.random.key(0), SIZE)
        return train_state.TrainState(
            step=jnp.zeros((), jnp.int32),
            params=variables["params"],
            batch_stats=variables["batch_stats"],
            opt_state=tx.init(variables["params"]),
            rng=jax.random.PRNGKey(0),
        )

    return config, model, tx, schedule, jax.eval_shape(state_fn)


def _abstract(tree, shardings):
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


@pytest.mark.parametrize("fsdp", [False, True], ids=["replicated", "fsdp"])
@pytest.mark.parametrize("name", FAMILIES)
def test_sharded_bf16_train_step_lowers_for_tpu_and_cuda(name, fsdp):
    config, model, tx, schedule, shapes = _setup(name)
    mesh = sharding.make_mesh(8)
    layout = sharding.state_shardings(shapes, mesh, FSDP if fsdp else None)
    step = train_state.jit_train_step(
        model, tx, config.train.loss, schedule, mesh, True, state_sharding=layout
    )
    b, t, (h, w) = BATCH, CLIP, SIZE
    data = sharding.batch_sharded(mesh)
    batch = {
        "frames": jax.ShapeDtypeStruct((b, t, h, w, 3), jnp.uint8, sharding=data),
        "masks": jax.ShapeDtypeStruct((b, t, h, w, 1), jnp.float32, sharding=data),
        "distance": jax.ShapeDtypeStruct((b, t, h, w), jnp.int32, sharding=data),
        "valid": jax.ShapeDtypeStruct((b, t), jnp.bool_, sharding=data),
    }
    prob = jax.ShapeDtypeStruct((), jnp.float32)
    exp = exported.export(step, PLATFORMS, _abstract(shapes, layout), batch, prob)
    assert exp.platforms == PLATFORMS and exp.nr_devices == 8

    (state_in, batch_in, _), _ = jax.tree.unflatten(exp.in_tree, exp.in_shardings_jax(mesh))
    state_out, _ = jax.tree.unflatten(exp.out_tree, exp.out_shardings_jax(mesh))
    # An input the step never reads (S2S has no border loss: no 'distance') has no sharding.
    used = {k: s.spec for k, s in batch_in.items() if s is not None}
    assert used == {k: PartitionSpec("data") for k in used} and {"frames", "masks"} <= set(used)
    split = 0
    leaves = jax.tree_util.tree_leaves_with_path(shapes)
    for (path, x), got_in, got_out in zip(
        leaves, jax.tree.leaves(state_in), jax.tree.leaves(state_out)
    ):
        want = FSDP.spec(x.shape, 8) if fsdp else PartitionSpec()
        assert got_in.spec == got_out.spec == want, jax.tree_util.keystr(path)
        split += want != PartitionSpec()
    kernels = [x for x in jax.tree.leaves(shapes.params) if x.ndim == 4]
    assert bool(split) == fsdp and split <= 3 * len(kernels)  # params, mu, nu

    text = exp.mlir_module()
    assert re.search(r"stablehlo\.convolution.*bf16", text), "no bfloat16 convolution"
    convolutions = re.findall(r"dim_numbers = (\[[^\]]*\]x\[[^\]]*\]->\[[^\]]*\])", text)
    forward = convolutions.count(FORWARD)
    gradients = sum(map(convolutions.count, GRADIENTS))
    assert 0 < forward <= gradients, f"the CPU's NHWC gradients: {forward} vs {gradients}"

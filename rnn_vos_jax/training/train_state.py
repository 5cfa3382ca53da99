"""Train state, optimizer and the pure, sharded training step.

`train_step` is a top-level pure function (state, batch, sample_prob) -> (state, metrics). It is
jitted once per BatchNorm mode with the state donated (replicated, or FSDP-sharded by
sharding.Fsdp) and the batch sharded over the mesh's 'data' axis; because the batch is one global
array, BatchNorm statistics and the loss are computed over the global batch exactly as on a
single device. The loss is the model family's
(Family.loss), so any outputs a family adds get their loss there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rnn_vos_jax import models
from rnn_vos_jax.training import sharding


@struct.dataclass(kw_only=True)
class TrainState:
    """Everything that a resumed run needs besides the data position (= step).

    Attributes:
      step: int32 scalar, optimizer steps done.
      params: model parameters (float32).
      batch_stats: BatchNorm running statistics ({} for models without BatchNorm).
      opt_state: optax state.
      rng: uint32[2] PRNG key; each step splits off its own key from it.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array


def make_optimizer(
    train_config: ml_collections.ConfigDict, schedule: Callable
) -> optax.GradientTransformation:
    """Adam (torch defaults: b1 0.9, b2 0.999, eps 1e-8, no weight decay) on `schedule`, with
    optional global-norm clipping (`grad_clip_norm` > 0; the authors use none)."""
    if train_config.optimizer != "adam":
        raise ValueError(f"config.train.optimizer={train_config.optimizer!r}; only 'adam' exists")
    adam = optax.adam(
        learning_rate=schedule,
        b1=train_config.adam.b1,
        b2=train_config.adam.b2,
        eps=train_config.adam.eps,
    )
    if train_config.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(train_config.grad_clip_norm), adam)
    return adam


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    seed: int,
    image_size: tuple[int, int],
    mesh: Mesh,
    variables: Mapping[str, Any] | None = None,
    fsdp: sharding.Fsdp | None = None,
) -> TrainState:
    """A fresh state created directly on `mesh`: replicated, or in the `fsdp` layout.

    Args:
      model: the Flax model.
      tx: optimizer.
      seed: seeds the parameter init and the state's training key.
      image_size: (H, W) of the training clips.
      mesh: training mesh.
      variables: optional {'params', 'batch_stats'} to start from (init_from / pretrained);
        the optimizer state is always fresh.
      fsdp: shard parameters and optimizer state by this rule (None: replicated).
    """
    # rbg keys for init: threefry's per-parameter streams dominate init time on CPU.
    k_init = jax.random.key(seed, impl="rbg")
    k_train = jax.random.fold_in(jax.random.PRNGKey(seed), 1)

    def init(k_init, k_train, given):
        fresh = models.init_variables(model, k_init, image_size)
        params = given["params"] if given is not None else fresh["params"]
        stats = given["batch_stats"] if given is not None else fresh["batch_stats"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=stats,
            opt_state=tx.init(params),
            rng=k_train,
        )

    if variables is not None:
        models.check_variables(variables, model, image_size, "the starting variables")
        variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    out = sharding.replicated(mesh)
    if fsdp is not None:
        out = sharding.state_shardings(jax.eval_shape(init, k_init, k_train, variables), mesh, fsdp)
    return jax.jit(init, out_shardings=out)(k_init, k_train, variables)


def train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    sample_prob: jax.Array,
    *,
    model: nn.Module,
    loss_fn: Callable,
    tx: optax.GradientTransformation,
    loss_config: Mapping[str, Any],
    schedule: Callable,
    bn_train: bool,
    param_sharding: Any = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on a batch of clips.

    Args:
      state: current TrainState.
      batch: frames uint8[B,T,H,W,3], masks float32[B,T,H,W,1], distance int32[B,T,H,W],
        valid bool[B,T] (frame 0 is the given first frame; frames 1..T-1 are predicted).
      sample_prob: float32 scalar, scheduled-sampling probability.
      model: Flax model (static).
      loss_fn: the family's loss(outputs, batch, **loss_config) -> (loss, parts) (static).
      tx: optimizer (static).
      loss_config: keyword arguments of `loss_fn` (config.train.loss).
      schedule: learning-rate schedule (only logged here; tx holds its own).
      bn_train: BatchNorm uses batch statistics (True) or its frozen running statistics.
      param_sharding: None when the parameters are replicated; under FSDP the pytree of their
        shardings (static): the step gathers full copies for the forward and backward pass and
        puts the gradients back in this layout, so the optimizer update runs on shards.

    Returns:
      (new state, metrics) with float32 scalars: loss, the loss's parts (e.g. bce, jaccard,
      distance), grad_norm, learning_rate, sample_prob.
    """
    rng, k_sample = jax.random.split(state.rng)

    def objective(params):
        if param_sharding is not None:
            # Gathered here (not left to GSPMD's propagation) so that every convolution runs
            # data parallel on whole kernels, as in the replicated step.
            params = jax.lax.with_sharding_constraint(params, _replicated_like(param_sharding))
        variables = {"params": params, "batch_stats": state.batch_stats}
        out, updates = model.apply(
            variables,
            batch["frames"],
            batch["masks"],
            sample_prob=sample_prob,
            train=bn_train,
            rngs={"sample": k_sample},
            mutable=["batch_stats"],
        )
        loss, parts = loss_fn(out, batch, **loss_config)
        return loss, (parts, updates.get("batch_stats", state.batch_stats))

    (loss, (parts, new_stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    if param_sharding is not None:
        grads = jax.lax.with_sharding_constraint(grads, param_sharding)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if not bn_train:
        # Frozen BatchNorm: running statistics stay as they are (torch eval mode).
        new_stats = state.batch_stats
    metrics = {
        "loss": loss,
        **parts,
        "grad_norm": optax.tree.norm(grads),
        "learning_rate": schedule(state.step),
        "sample_prob": jnp.asarray(sample_prob, jnp.float32),
    }
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=new_stats, opt_state=opt_state, rng=rng
    )
    return new_state, metrics


def _replicated_like(shardings: Any) -> Any:
    return jax.tree.map(lambda s: NamedSharding(s.mesh, PartitionSpec()), shardings)


def jit_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    loss_config: Mapping[str, Any],
    schedule: Callable,
    mesh: Mesh,
    bn_train: bool,
    *,
    loss_fn: Callable | None = None,
    state_sharding: Any = None,
) -> Callable:
    """`train_step` jitted for `mesh`: state donated, batch sharded on 'data'.

    `loss_fn` defaults to the loss of the model's family (models.family_of(model).loss).
    `state_sharding` is the state's layout, a TrainState of shardings
    (sharding.state_shardings(state, mesh, fsdp)); None = replicated. The step returns the state in the same layout.
    """
    rep = sharding.replicated(mesh)
    param_sharding = None
    if state_sharding is None:
        state_sharding = rep
    elif any(s.spec != PartitionSpec() for s in jax.tree.leaves(state_sharding.params)):
        param_sharding = state_sharding.params
    step = functools.partial(
        train_step,
        model=model,
        loss_fn=loss_fn or models.family_of(model).loss,
        tx=tx,
        loss_config=dict(loss_config),
        schedule=schedule,
        bn_train=bn_train,
        param_sharding=param_sharding,
    )
    return jax.jit(
        step,
        in_shardings=(state_sharding, sharding.batch_sharded(mesh), rep),
        out_shardings=(state_sharding, rep),
        donate_argnums=(0,),
    )


def abstract_state(
    state_fn: Callable[[], TrainState], mesh: Mesh, fsdp: sharding.Fsdp | None = None
) -> TrainState:
    """ShapeDtypeStructs, with the shardings of the replicated or `fsdp` layout, of the state
    `state_fn` would build (a restore target)."""
    shapes = jax.eval_shape(state_fn)
    layout = sharding.state_shardings(shapes, mesh, fsdp)
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, layout
    )

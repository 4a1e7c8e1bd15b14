"""The training step and loop: bf16 (or fp32) compute, fp32 master weights, gradient accumulation.

    state = init_state(model, optimizer, seed, seq_len)        # fp32 params + optax state
    step_fn = make_train_step(model, optimizer)                # jitted (state, batch) -> (state, m)
    state = train(step_fn, state, source, num_steps=..., batch_size=..., grad_accum=...)

Precision: the params (and the AdamW moments) stay float32; `BasedLM(dtype=bfloat16)` casts them
to bf16 at use, so the forward/backward run in bf16 with fp32 accumulation, and the gradients
arrive in float32 (the cast's transpose). The loss (log-softmax) is computed in float32.

Accumulation: the batch is [A, b, L] (A micro-batches); a `lax.scan` sums the token-weighted
loss gradients of the micro-batches and divides by the total weight once, so A micro-batches of b
rows give the gradient of one batch of A*b rows (up to summation order).
"""

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from based_jax.model import BasedLM
from based_jax.training.data import DataSource, accumulation_batch


@struct.dataclass
class TrainState:
  """step: [] int32 optimizer steps done; params: fp32 "params" tree; opt_state: optax state;
  rng: PRNG key (split once per step; reserved for stochastic layers, none today)."""

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


def init_state(model: BasedLM, optimizer: optax.GradientTransformation, seed: int,
               seq_len: int = 8) -> TrainState:
  """Fresh fp32 params from `model.init` with PRNGKey(seed) and the optimizer's initial state."""
  init_key, rng = jax.random.split(jax.random.PRNGKey(seed))
  ids = jnp.zeros((1, seq_len), jnp.int32)
  params = jax.jit(model.init)(init_key, ids)["params"]
  params = jax.tree_util.tree_map(lambda p: p.astype(jnp.float32), params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params), rng=rng)


def token_losses(model: BasedLM, params, input_ids: jax.Array,
                 targets: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-token cross entropy [B, L] float32 and argmax predictions [B, L] int32.

  The softmax runs over all Vp columns, padded ones included (as upstream trains): the model
  learns to give ids >= vocab_size no mass, so greedy decoding over the padded vocab never
  picks them.
  """
  logits = model.apply({"params": params}, input_ids).astype(jnp.float32)  # [B, L, Vp]
  logp = jax.nn.log_softmax(logits, axis=-1)  # [B, L, Vp]
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]  # [B, L]
  return nll, jnp.argmax(logits, axis=-1).astype(jnp.int32)


def loss_and_metrics(model: BasedLM, params, batch: dict[str, jax.Array]):
  """Sum of weighted token losses (for gradients), with (weight sum, correct count)."""
  nll, pred = token_losses(model, params, batch["input_ids"], batch["targets"])
  w = batch["weights"].astype(jnp.float32)  # [B, L]
  correct = jnp.sum(w * (pred == batch["targets"]))
  return jnp.sum(nll * w), (jnp.sum(w), correct)


def make_train_step(model: BasedLM, optimizer: optax.GradientTransformation) -> Callable:
  """Jitted `(state, batch) -> (state, metrics)`; batch arrays are [A, b, L] (A micro-batches).

  metrics: loss (mean token loss of the step), accuracy (weighted argmax accuracy), grad_norm
  (of the mean gradient, before clipping), tokens (weight sum).
  """
  grad_fn = jax.value_and_grad(lambda p, mb: loss_and_metrics(model, p, mb), has_aux=True)

  def step_fn(state: TrainState, batch: dict[str, jax.Array]):
    def micro(carry, mb):
      grads, loss, weight, correct = carry
      (l, (w, c)), g = grad_fn(state.params, mb)
      grads = jax.tree_util.tree_map(jnp.add, grads, g)
      return (grads, loss + l, weight + w, correct + c), None

    zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
    init = (zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32),
            jnp.zeros((), jnp.float32))
    (grads, loss, weight, correct), _ = jax.lax.scan(micro, init, batch)
    denom = jnp.maximum(weight, 1.0)
    grads = jax.tree_util.tree_map(lambda g: g / denom, grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    rng, _ = jax.random.split(state.rng)
    metrics = {"loss": loss / denom, "accuracy": correct / denom,
               "grad_norm": optax.tree.norm(grads), "tokens": weight}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state, rng=rng), metrics

  return jax.jit(step_fn, donate_argnums=(0,))


def make_eval_fn(model: BasedLM) -> Callable:
  """Jitted `(params, batch [B, L]) -> (loss sum, weight sum, correct count)`."""

  def eval_fn(params, batch):
    loss, (weight, correct) = loss_and_metrics(model, params, batch)
    return loss, weight, correct

  return jax.jit(eval_fn)


def evaluate(eval_fn: Callable, params, source: DataSource, *, num_batches: int,
             batch_size: int, first_step: int = 10**9) -> dict[str, float]:
  """Mean token loss and accuracy over `num_batches` batches numbered from `first_step`
  (a range training never reaches, so the examples are fresh)."""
  loss = weight = correct = 0.0
  for i in range(num_batches):
    batch = {k: jnp.asarray(v) for k, v in source.batch(first_step + i, batch_size).items()}
    l, w, c = (float(x) for x in eval_fn(params, batch))
    loss, weight, correct = loss + l, weight + w, correct + c
  return {"loss": loss / max(weight, 1.0), "accuracy": correct / max(weight, 1.0)}


@dataclasses.dataclass
class LoopHooks:
  """Optional callbacks: on_log(step, metrics dict) every log_every steps;
  on_checkpoint(state) every checkpoint_every steps (0 = never) and at the end."""

  log_every: int = 50
  checkpoint_every: int = 0
  on_log: Callable[[int, dict[str, float]], None] | None = None
  on_checkpoint: Callable[[TrainState], None] | None = None
  progress: bool = True
  max_seconds: float | None = None  # stop (and checkpoint) after this much time in train()


def train(step_fn: Callable, state: TrainState, source: DataSource, *, num_steps: int,
          batch_size: int, grad_accum: int = 1, hooks: LoopHooks | None = None) -> TrainState:
  """Run optimizer steps from `state.step` up to `num_steps` (total, not additional).

  Batches come from `source` by step number (resuming needs no data state). Losses are averaged
  over each logging window; a tqdm bar shows the latest loss.
  """
  hooks = hooks or LoopHooks()
  start = int(state.step)
  if start > num_steps:
    raise ValueError(f"num_steps={num_steps} is below the state's step {start}")
  bar = None
  if hooks.progress:
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel

    bar = tqdm(total=num_steps, initial=start, unit="step", dynamic_ncols=True)
  t_start = t0 = time.perf_counter()
  window: list[dict[str, jax.Array]] = []
  for step in range(start, num_steps):
    batch = accumulation_batch(source, step, batch_size, grad_accum)
    state, metrics = step_fn(state, {k: jnp.asarray(v) for k, v in batch.items()})
    window.append(metrics)
    done = step + 1
    if bar is not None:
      bar.update(1)
    if done % hooks.log_every == 0 or done == num_steps:
      avg = {k: float(np.mean([float(m[k]) for m in window])) for k in window[0]}
      avg["steps_per_s"] = len(window) / max(time.perf_counter() - t0, 1e-9)
      t0, window = time.perf_counter(), []
      if bar is not None:
        bar.set_postfix(loss=f"{avg['loss']:.4f}", acc=f"{avg['accuracy']:.3f}")
      if hooks.on_log is not None:
        hooks.on_log(done, avg)
      if not math.isfinite(avg["loss"]):
        raise FloatingPointError(f"loss became {avg['loss']} at step {done}")
    out_of_time = (hooks.max_seconds is not None
                   and time.perf_counter() - t_start > hooks.max_seconds)
    if hooks.on_checkpoint is not None and (
        (hooks.checkpoint_every and done % hooks.checkpoint_every == 0) or done == num_steps
        or out_of_time):
      hooks.on_checkpoint(state)
    if out_of_time:
      break
  if bar is not None:
    bar.close()
  return state


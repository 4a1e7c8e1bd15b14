"""Linear-attention decoding that writes its state once per loop iteration, not every step.

`recurrent_step` reads the whole float32 state for q's readout and writes it back with the step's
rank-1 term: for based-360m at B = 256 that is 160 MB read and 160 MB written per layer and step,
the largest memory stream of a decode step. Inside `generate`'s loop of U steps per iteration the
writes of the first U - 1 steps can wait. Each such step keeps its k and v in a small pending
buffer and reads

    num = phi(q).S + sum_j (phi(q).phi(k_j)) v_j,   den = phi(q).s + sum_j phi(q).phi(k_j)

over the pending steps j and its own; the iteration's last step writes S + sum_j phi(k_j) v_j^T,
adding the terms in step order: the sums that U calls of `recurrent_step` form (on the CPU the
same floats; the readouts in between differ by rounding). Per iteration and layer that is U
reads and one write of the state instead of U of each.

The pending count is static: a field of the pytree's structure, not an array. Each unrolled step
of an iteration is traced as what it is (a read-only step or the flushing one), and the state that
leaves an iteration has the structure it entered with (nothing pending), as `lax.while_loop`
requires.

Shapes: B batch, H heads, F = 16 q/k features, E feature rows of the state (273 or 153), C pending
slots (U - 1), Dv value dim.
"""

import jax
import jax.numpy as jnp
from flax import struct

from based_jax.ops.reference import state_feature_map
from based_jax.ops.state import FEATURE_DIM, LinearAttentionState

_HIGHEST = jax.lax.Precision.HIGHEST


@struct.dataclass
class DeferredState:
  """A LinearAttentionState with the steps not yet added to it.

  state: kv [B, H, E, Dv], k_state [B, H, E] float32, the sums up to the last write.
  pending_k: [B, H, C, F] float32, k of the steps since, in slots 0 .. filled - 1.
  pending_v: [B, H, C, Dv] float32, their v.
  filled: how many slots hold a pending step (static).
  """

  state: LinearAttentionState
  pending_k: jax.Array
  pending_v: jax.Array
  filled: int = struct.field(pytree_node=False, default=0)

  @property
  def capacity(self) -> int:
    return self.pending_k.shape[-2]


def defer_writes(state: LinearAttentionState, capacity: int) -> DeferredState:
  """`state` with `capacity` empty pending slots: it is written every capacity + 1 steps."""
  if not isinstance(capacity, int) or capacity < 0:
    raise ValueError(f"defer_writes: capacity must be an int >= 0; got {capacity!r}")
  b, h, _, dv = state.kv.shape                                   # [B, H, E, Dv]
  return DeferredState(state, jnp.zeros((b, h, capacity, FEATURE_DIM), jnp.float32),
                       jnp.zeros((b, h, capacity, dv), jnp.float32))


def deferred_recurrent_step(q: jax.Array, k: jax.Array, v: jax.Array, deferred: DeferredState, *,
                            normalize: bool, eps: float) -> tuple[jax.Array, DeferredState]:
  """One decoding step on a DeferredState (see the module docstring).

  q, k: [B, H, F]; v: [B, H, Dv]. Returns (out [B, H, Dv] in v's dtype, the next DeferredState):
  with a free slot, this step's k and v go there and the state is only read; the step that finds
  every slot filled writes the state with all of them and its own term, and empties the slots.
  """
  state = deferred.state
  feature_map = state_feature_map(state, "deferred_recurrent_step")
  phi_q = feature_map(q.astype(jnp.float32))                                 # [B, H, E]
  ks_ = [deferred.pending_k[:, :, j] for j in range(deferred.filled)]        # [B, H, F] each
  vs_ = [deferred.pending_v[:, :, j] for j in range(deferred.filled)]        # [B, H, Dv] each
  ks_.append(k.astype(jnp.float32))
  vs_.append(v.astype(jnp.float32))
  phi_ks = [feature_map(x) for x in ks_]                                     # [B, H, E] each

  if deferred.filled == deferred.capacity:   # the iteration's last step: write everything
    kv, k_state = state.kv, state.k_state
    for phi_k, vj in zip(phi_ks, vs_):        # step order: the floats of recurrent_step's writes
      kv = kv + phi_k[..., :, None] * vj[..., None, :]                        # [B, H, E, Dv]
      k_state = k_state + phi_k                                               # [B, H, E]
    num = jnp.einsum("bhe,bhed->bhd", phi_q, kv, precision=_HIGHEST)        # [B, H, Dv]
    den = jnp.einsum("bhe,bhe->bh", phi_q, k_state, precision=_HIGHEST)     # [B, H]
    nxt = DeferredState(LinearAttentionState(kv, k_state), deferred.pending_k, deferred.pending_v)
  else:                                       # read the state, keep this step's k and v
    num = jnp.einsum("bhe,bhed->bhd", phi_q, state.kv, precision=_HIGHEST)  # [B, H, Dv]
    den = jnp.einsum("bhe,bhe->bh", phi_q, state.k_state, precision=_HIGHEST)  # [B, H]
    for phi_k, vj in zip(phi_ks, vs_):
      score = jnp.sum(phi_q * phi_k, axis=-1)                                 # [B, H]
      num = num + score[..., None] * vj
      den = den + score
    slot = deferred.filled
    nxt = DeferredState(state, deferred.pending_k.at[:, :, slot].set(ks_[-1]),
                        deferred.pending_v.at[:, :, slot].set(vs_[-1]), filled=slot + 1)
  out = num / (den[..., None] + eps) if normalize else num
  return out.astype(v.dtype), nxt


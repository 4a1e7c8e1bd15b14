"""The selective scan of Mamba: a sequential reference, a chunked parallel scan, and one step.

Shape legend: B batch, L length, C channels (d_inner), N state size (d_state), T chunk length.

Math (per batch row and channel c), with h_{-1} = h0 (zeros when None):
    h_t = exp(delta_t[c] * A[c]) * h_{t-1} + delta_t[c] * B_t * u_t[c]      # [N]
    y_t[c] = C_t . h_t + D[c] * u_t[c]
delta is the softplus'd step (>= 0), A = -exp(A_log) < 0, B_t, C_t the input-dependent [N]
projections shared by all channels. A position with delta = 0 leaves h unchanged and adds
nothing, which is how left padding is made invisible. Everything is computed in float32.

- `selective_scan_reference`: `lax.scan` over time, the definition (O(L) time, no parallelism).
- `selective_scan_chunked`: the prefill path. `lax.scan` over chunks of T steps; inside a chunk
  `lax.associative_scan` over the pairs (a, b) = (exp(delta A), delta B u) with
  (a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2). Only one chunk's [B, T, C, N] exists at a time, so
  memory is O(B L C + B T C N), never [B, L, C, N].
- `selective_scan_step`: one token from a state (decoding).
"""

import jax
import jax.numpy as jnp

DEFAULT_CHUNK = 64

_f32 = jnp.float32


def _check(u, delta, a, b, c, d, h0):
  """ValueError naming the argument when shapes disagree (before any computation)."""
  if u.ndim != 3:
    raise ValueError(f"u must have shape [B, L, C]; got {u.shape}")
  bsz, length, ch = u.shape
  n = a.shape[-1] if a.ndim == 2 else None
  want = {"delta": (delta, (bsz, length, ch)), "A": (a, (ch, n)), "B": (b, (bsz, length, n)),
          "C": (c, (bsz, length, n)), "D": (d, (ch,))}
  if h0 is not None:
    want["h0"] = (h0, (bsz, ch, n))
  for name, (x, shape) in want.items():
    if x.shape != shape:
      raise ValueError(f"{name} must have shape {shape} (from u [B, L, C] = {u.shape} and "
                       f"A [C, N]); got {x.shape}")


def _discretize(u, delta, a, b):
  """-> dA = exp(delta A) [B, L, C, N], dBu = delta B u [B, L, C, N] (float32)."""
  delta = delta.astype(_f32)
  da = jnp.exp(delta[..., None] * a.astype(_f32))  # [B, L, C, N]
  dbu = (delta * u.astype(_f32))[..., None] * b.astype(_f32)[:, :, None, :]  # [B, L, C, N]
  return da, dbu


def _readout(h, c, u, d):
  """y = C . h + D u. h: [B, L, C, N], c: [B, L, N], u: [B, L, C] -> [B, L, C] float32.

  An elementwise product and sum, not a dot, so no TF32 rounding on GPUs.
  """
  y = jnp.sum(h * c.astype(_f32)[:, :, None, :], axis=-1)  # [B, L, C]
  return y + d.astype(_f32) * u.astype(_f32)


def selective_scan_reference(u, delta, a, b, c, d, h0=None):
  """Sequential oracle. u, delta: [B, L, C]; a: [C, N]; b, c: [B, L, N]; d: [C];
  h0: [B, C, N] or None -> (y [B, L, C] float32, h_last [B, C, N] float32)."""
  _check(u, delta, a, b, c, d, h0)
  bsz, _, ch = u.shape
  n = a.shape[-1]
  h = jnp.zeros((bsz, ch, n), _f32) if h0 is None else h0.astype(_f32)
  da, dbu = _discretize(u, delta, a, b)

  def step(h, xs):
    da_t, dbu_t = xs  # [B, C, N] each
    h = da_t * h + dbu_t
    return h, h

  h, hs = jax.lax.scan(step, h, (jnp.moveaxis(da, 1, 0), jnp.moveaxis(dbu, 1, 0)))
  hs = jnp.moveaxis(hs, 0, 1)  # [B, L, C, N]
  return _readout(hs, c, u, d), h


def _combine(x, y):
  a1, b1 = x
  a2, b2 = y
  return a1 * a2, a2 * b1 + b2


def selective_scan_chunked(u, delta, a, b, c, d, h0=None, *, chunk: int = DEFAULT_CHUNK):
  """Chunked parallel scan, same arguments and results as `selective_scan_reference`.

  L need not be a multiple of `chunk`: the last chunk is completed with delta = 0, u = 0 steps,
  which leave the state unchanged, and their outputs are dropped.
  """
  _check(u, delta, a, b, c, d, h0)
  if not isinstance(chunk, int) or chunk < 1:
    raise ValueError(f"chunk must be a positive int; got {chunk!r}")
  bsz, length, ch = u.shape
  n = a.shape[-1]
  t = min(chunk, length)
  n_chunks = -(-length // t)
  extra = n_chunks * t - length
  pad = ((0, 0), (0, extra), (0, 0))
  u_p, delta_p = jnp.pad(u.astype(_f32), pad), jnp.pad(delta.astype(_f32), pad)  # [B, L', C]
  b_p, c_p = jnp.pad(b.astype(_f32), pad), jnp.pad(c.astype(_f32), pad)  # [B, L', N]

  def split(x):  # [B, L', ...] -> [n_chunks, B, T, ...]
    return jnp.moveaxis(x.reshape(bsz, n_chunks, t, *x.shape[2:]), 1, 0)

  h = jnp.zeros((bsz, ch, n), _f32) if h0 is None else h0.astype(_f32)

  def body(h, xs):
    u_k, delta_k, b_k, c_k = xs  # [B, T, C], [B, T, C], [B, T, N], [B, T, N]
    da, dbu = _discretize(u_k, delta_k, a, b_k)  # [B, T, C, N] each
    a_cum, b_cum = jax.lax.associative_scan(_combine, (da, dbu), axis=1)  # [B, T, C, N]
    hs = a_cum * h[:, None] + b_cum  # [B, T, C, N]
    return hs[:, -1], _readout(hs, c_k, u_k, d)  # [B, C, N], [B, T, C]

  h, ys = jax.lax.scan(body, h, (split(u_p), split(delta_p), split(b_p), split(c_p)))
  y = jnp.moveaxis(ys, 0, 1).reshape(bsz, n_chunks * t, ch)  # [B, L', C]
  return y[:, :length], h


def selective_scan_step(u, delta, a, b, c, d, h):
  """One step. u, delta: [B, C]; a: [C, N]; b, c: [B, N]; d: [C]; h: [B, C, N]
  -> (y [B, C] float32, h [B, C, N] float32)."""
  y, h = selective_scan_reference(u[:, None], delta[:, None], a, b[:, None], c[:, None], d, h)
  return y[:, 0], h


def selective_scan(u, delta, a, b, c, d, h0=None, *, impl: str = "chunked",
                   chunk: int = DEFAULT_CHUNK):
  """Dispatch: impl "chunked" (prefill default) or "reference" (sequential)."""
  if impl == "chunked":
    return selective_scan_chunked(u, delta, a, b, c, d, h0, chunk=chunk)
  if impl == "reference":
    return selective_scan_reference(u, delta, a, b, c, d, h0)
  raise ValueError(f"impl must be 'chunked' or 'reference'; got {impl!r}")

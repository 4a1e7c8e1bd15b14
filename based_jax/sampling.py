"""Next-token sampling: greedy, temperature, top-k and top-p (nucleus), all inside jit.

Shapes: `B` batch, `Vp` padded vocab (the LM head width), `V` the tokenizer's vocab (`V <= Vp`).

Greedy decoding (`temperature == 0` or `top_k == 1`) is an argmax over all `Vp` logits, exactly
as the upstream Based `sample` does (padded columns included; trained models never pick them).
When sampling (`temperature > 0` and `top_k != 1`), the padded columns `[V, Vp)` are masked to
`-inf` first whenever the vocab size is known, so a sampled id always decodes.

Order of the filters, as upstream: top-k on the raw logits, then divide by the temperature, then
top-p on the tempered distribution, then one categorical draw per row.
"""

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How to pick the next token.

  temperature: 0 means greedy (argmax); > 0 divides the logits before the softmax.
  top_k: 0 keeps every token; k >= 1 keeps the k largest logits (1 is greedy).
  top_p: keep the smallest set of most likely tokens whose probability reaches top_p; 1 keeps all.
  """

  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)):
      raise ValueError(
          f"SamplingConfig.temperature must be a number >= 0; got {self.temperature!r}")
    if not self.temperature >= 0.0:  # also rejects NaN
      raise ValueError(f"SamplingConfig.temperature must be >= 0; got {self.temperature}")
    if isinstance(self.top_k, bool) or not isinstance(self.top_k, int):
      raise ValueError(f"SamplingConfig.top_k must be an int >= 0; got {self.top_k!r}")
    if self.top_k < 0:
      raise ValueError(f"SamplingConfig.top_k must be >= 0 (0 disables it); got {self.top_k}")
    if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)):
      raise ValueError(f"SamplingConfig.top_p must be a number in (0, 1]; got {self.top_p!r}")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"SamplingConfig.top_p must be in (0, 1]; got {self.top_p}")

  @property
  def greedy(self) -> bool:
    return self.temperature == 0.0 or self.top_k == 1


def mask_padded_vocab(logits: jax.Array, vocab_size: int | None) -> jax.Array:
  """Set the padded columns [vocab_size, Vp) of logits [B, Vp] to -inf."""
  vp = logits.shape[-1]
  if vocab_size is None or vocab_size >= vp:
    return logits
  if vocab_size < 1:
    raise ValueError(f"vocab_size must be >= 1; got {vocab_size}")
  column = jnp.arange(vp)  # [Vp]
  return jnp.where(column < vocab_size, logits, -jnp.inf)  # [B, Vp]


def filter_logits(logits: jax.Array, config: SamplingConfig,
                  vocab_size: int | None = None) -> jax.Array:
  """The tempered logits that sampling draws from; removed tokens are -inf.

  logits: [B, Vp] float. Returns [B, Vp] float32. Only meaningful when not config.greedy.
  """
  if config.temperature <= 0.0:
    raise ValueError("filter_logits: config.temperature must be > 0 (greedy needs no filter)")
  x = mask_padded_vocab(logits.astype(jnp.float32), vocab_size)  # [B, Vp]
  vp = x.shape[-1]
  if 0 < config.top_k < vp:
    kth = jax.lax.top_k(x, config.top_k)[0][:, -1:]  # [B, 1] the k-th largest logit
    x = jnp.where(x >= kth, x, -jnp.inf)  # ties with the k-th value are kept
  x = x / config.temperature  # [B, Vp]
  if config.top_p < 1.0:
    order = jnp.argsort(-x, axis=-1)  # [B, Vp] token ids, most likely first
    sorted_x = jnp.take_along_axis(x, order, axis=-1)  # [B, Vp]
    probs = jax.nn.softmax(sorted_x, axis=-1)  # [B, Vp]
    mass_before = jnp.cumsum(probs, axis=-1) - probs  # [B, Vp] mass of strictly better tokens
    keep_sorted = mass_before < config.top_p  # [B, Vp]; the most likely token is always kept
    keep = jnp.zeros_like(keep_sorted).at[
        jnp.arange(x.shape[0])[:, None], order].set(keep_sorted)  # [B, Vp] back in id order
    x = jnp.where(keep, x, -jnp.inf)
  return x


def sample(logits: jax.Array, key: jax.Array, config: SamplingConfig,
           vocab_size: int | None = None) -> jax.Array:
  """Pick one token per row. logits: [B, Vp] float; key: a JAX PRNG key. Returns [B] int32."""
  if config.greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)  # [B] over all Vp columns, as upstream
  x = filter_logits(logits, config, vocab_size)  # [B, Vp]
  return jax.random.categorical(key, x, axis=-1).astype(jnp.int32)  # [B]

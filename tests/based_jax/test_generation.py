"""generate(): recurrent decode vs full forwards, left-padding invariance, EOS, streaming, seeds,
compilation counts, stop strings, argument errors.

Two models: `CumsumLM`, a tiny Flax LM written here with the same prefill / decode_step API
(its full forward is an independent cumulative-sum formula, so the decode loop mechanics are
tested without the Based model), and the real `BasedLM` built from `BasedConfig.tiny`.
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from based_jax import generation
from based_jax.generation import bucket_length, generate
from based_jax.sampling import SamplingConfig

DECODE_TRACES = {"n": 0}


class CumsumLM(nn.Module):
  """logits_t = W tanh(sum_{s<=t} E[x_s]) + b over real tokens; the cache is the running sum."""

  vocab: int = 41
  width: int = 16

  def setup(self):
    self.embed = nn.Embed(self.vocab, self.width)
    self.head = nn.Dense(self.vocab)

  def __call__(self, ids):  # [B, L] -> [B, L, V]
    h = jnp.cumsum(self.embed(ids), axis=1)  # [B, L, W]
    return self.head(jnp.tanh(h))

  def prefill(self, ids, mask, max_length):
    del max_length
    e = self.embed(ids)  # [B, L, W]
    if mask is not None:
      e = e * mask[..., None]
    s = e.sum(axis=1)  # [B, W]
    return self.head(jnp.tanh(s)), {"sum": s}

  def decode_step(self, tok, cache):
    DECODE_TRACES["n"] += 1
    s = cache["sum"] + self.embed(tok)  # [B, W]
    return self.head(jnp.tanh(s)), {"sum": s}


@pytest.fixture(scope="module")
def toy():
  model = CumsumLM()
  params = model.init(jax.random.key(0), jnp.zeros((1, 3), jnp.int32))["params"]
  # sharpen the head so greedy argmax has clear winners (no float ties between the two paths)
  params = jax.tree.map(lambda x: x * 4.0, params)
  return model, params


def greedy_by_full_forwards(apply_fn, prompt: np.ndarray, steps: int) -> np.ndarray:
  """Reference: re-run the whole sequence each step and take the argmax at its last token.

  The sequence lives right-padded in one fixed [1, L + steps] buffer (one compilation); the
  model is causal, so the padding after the last token cannot change that token's logits.
  """
  length = len(prompt)
  seq = np.zeros((1, length + steps), np.int32)  # [1, L + T]
  seq[0, :length] = prompt
  forward = jax.jit(apply_fn)
  out = []
  for k in range(steps):
    logits = np.asarray(forward(jnp.asarray(seq)))[0, length + k - 1]  # [V]
    seq[0, length + k] = int(np.argmax(logits))
    out.append(seq[0, length + k])
  return np.array(out, np.int32)


def left_pad(rows: list[np.ndarray], pad: int) -> tuple[np.ndarray, np.ndarray]:
  length = max(len(r) for r in rows)
  ids = np.full((len(rows), length), pad, np.int32)
  mask = np.zeros((len(rows), length), np.int32)
  for i, r in enumerate(rows):
    ids[i, length - len(r):] = r
    mask[i, length - len(r):] = 1
  return ids, mask


# ------------------------------------------------------------------------------------------
# Decode-loop mechanics on the toy model
# ------------------------------------------------------------------------------------------


def test_toy_greedy_matches_full_forwards(toy):
  model, params = toy
  rng = np.random.default_rng()
  prompt = rng.integers(0, model.vocab, size=(7,))
  out = generate(model, params, prompt[None], max_new_tokens=70)
  want = greedy_by_full_forwards(lambda x: model.apply({"params": params}, x), prompt, 70)
  np.testing.assert_array_equal(out.tokens[0], want)
  assert out.lengths.tolist() == [70] and out.finish_reasons == ("length",)
  assert out.steps == 70 and out.prompt_length == 16


def test_toy_single_new_token_is_the_prefill_argmax(toy):
  model, params = toy
  ids = np.random.default_rng().integers(0, model.vocab, size=(3, 9))
  out = generate(model, params, ids, max_new_tokens=1)
  want = np.asarray(model.apply({"params": params}, jnp.asarray(ids)))[:, -1].argmax(-1)
  assert out.tokens.shape == (3, 1) and out.steps == 1
  np.testing.assert_array_equal(out.tokens[:, 0], want)


def test_toy_left_padding_and_buckets_do_not_change_tokens(toy):
  model, params = toy
  rng = np.random.default_rng()
  rows = [rng.integers(0, model.vocab, size=(n,)) for n in (1, 9, 4, 17)]  # 17 -> bucket 32
  ids, mask = left_pad(rows, pad=3)
  batch = generate(model, params, ids, mask, max_new_tokens=12)
  for i, r in enumerate(rows):
    for buckets in ("auto", None):
      alone = generate(model, params, r[None], max_new_tokens=12, prompt_buckets=buckets)
      np.testing.assert_array_equal(batch.tokens[i], alone.tokens[0], err_msg=f"row {i} {buckets}")


def test_toy_eos_stops_rows_and_pads_them(toy):
  model, params = toy
  rng = np.random.default_rng()
  for _ in range(20):  # a prompt whose row 0 emits a new token after step 0 (most do)
    ids = rng.integers(0, model.vocab, size=(5, 6))
    free = generate(model, params, ids, max_new_tokens=24)
    # choose as EOS a token that row 0 emits for the first time at step k > 0
    firsts = {}
    for k, t in enumerate(free.tokens[0]):
      firsts.setdefault(int(t), k)
    eos, k = max(firsts.items(), key=lambda kv: kv[1])
    if k > 0:
      break
  assert k > 0, "fixture: in 20 random prompts row 0 never emitted a new token after step 0"
  pad = model.vocab - 1 if eos != model.vocab - 1 else 0
  out = generate(model, params, ids, max_new_tokens=24, eos_token_id=eos, pad_token_id=pad)
  for b in range(ids.shape[0]):
    hits = np.nonzero(free.tokens[b] == eos)[0]
    n = int(hits[0]) + 1 if hits.size else 24
    assert out.lengths[b] == n
    np.testing.assert_array_equal(out.tokens[b, :n], free.tokens[b, :n])
    assert (out.tokens[b, n:] == pad).all()
    assert out.finish_reasons[b] == ("eos" if hits.size else "length")
  assert out.lengths[0] == k + 1


def test_toy_loop_stops_when_all_rows_finished(toy):
  model, params = toy
  ids = np.random.default_rng().integers(0, model.vocab, size=(1, 5))
  free = generate(model, params, ids, max_new_tokens=30)
  eos = int(free.tokens[0, 3])
  n = int(np.nonzero(free.tokens[0] == eos)[0][0]) + 1
  out = generate(model, params, ids, max_new_tokens=30, eos_token_id=eos)
  assert out.steps == n < 30


def test_toy_streaming_callback_sees_every_step_in_order(toy):
  model, params = toy
  ids = np.random.default_rng().integers(0, model.vocab, size=(3, 5))
  free = generate(model, params, ids, max_new_tokens=10)
  eos = int(free.tokens[1, 2])
  seen = []
  out = generate(model, params, ids, max_new_tokens=10, eos_token_id=eos,
                 callback=lambda step, tok, active: seen.append((step, tok.copy(), active.copy())))
  assert [s for s, _, _ in seen] == list(range(out.steps))
  streamed = np.stack([t for _, t, _ in seen], axis=1)  # [B, steps]
  np.testing.assert_array_equal(streamed, out.tokens[:, :out.steps])
  active = np.stack([a for _, _, a in seen], axis=1)  # [B, steps]
  np.testing.assert_array_equal(active.sum(axis=1), out.lengths)


def _eos_row_finishing_mid_loop(model, params, ids, steps):
  """An EOS id at which some row stops before `steps` and some other row runs on (from a free
  run), or None when the prompt gives none."""
  free = generate(model, params, ids, max_new_tokens=steps)
  for eos in map(int, np.unique(free.tokens[:, 1:])):
    hits = (free.tokens == eos).any(axis=1)
    if hits.any() and not hits.all():
      return eos
  return None


@pytest.mark.parametrize("loop", [dict(decode_unroll=2), dict(decode_unroll=3),
                                  dict(decode_unroll=4), dict(decode_check_every=4),
                                  dict(decode_unroll=2, decode_check_every=5),
                                  dict(decode_check_every=64)])
def test_toy_unrolled_or_rarely_checked_decode_loop_gives_the_same_outputs(toy, loop):
  """U steps per loop iteration, or the stop condition read every few steps only: the same
  tokens, lengths, reasons and steps as one step per check, for lengths that the steps per check
  do not divide, with rows stopping at EOS, sampling, and streaming."""
  model, params = toy
  rng = np.random.default_rng()
  for _ in range(20):  # a prompt with an EOS at which some rows stop and others run on
    ids = rng.integers(0, model.vocab, size=(4, 6))
    eos = _eos_row_finishing_mid_loop(model, params, ids, 11)
    if eos is not None:
      break
  assert eos is not None, "fixture: 20 random prompts gave no EOS that stops some rows only"
  cases = [dict(max_new_tokens=n) for n in (1, 2, 5, 11)]
  cases += [dict(max_new_tokens=11, eos_token_id=eos, pad_token_id=model.vocab - 1)]
  cases += [dict(max_new_tokens=9, sampling=SamplingConfig(temperature=1.3),
                 seed=int(rng.integers(99)))]
  for kwargs in cases:
    one = generate(model, params, ids, **kwargs)
    many = generate(model, params, ids, **loop, **kwargs)
    np.testing.assert_array_equal(many.tokens, one.tokens, err_msg=str(kwargs))
    np.testing.assert_array_equal(many.lengths, one.lengths, err_msg=str(kwargs))
    assert (many.finish_reasons, many.steps) == (one.finish_reasons, one.steps), kwargs
  streams = []
  for settings in ({}, loop):
    seen = []
    generate(model, params, ids, max_new_tokens=10, eos_token_id=eos, **settings,
             callback=lambda step, tok, active: seen.append((step, tok.tolist(), active.tolist())))
    streams.append(seen)
  assert streams[1] == streams[0]


def test_iterations_per_check_round_up_to_iterations_and_even_out_the_checks():
  per = generation.iterations_per_check
  assert per(65, 1, None) == 1            # "auto": read the condition after every iteration
  assert per(65, 1, 64) == 64             # 64 decode steps after the prefill's token: one check
  assert per(65, 4, 64) == 16             # 16 iterations of 4 steps
  assert per(65, 4, 6) == 2               # 6 steps round up to 2 iterations of 4
  assert per(100, 1, 64) == 50            # 99 steps: two checks of 50, not 64 + 64
  assert per(10, 1, 64) == 9              # never more than the steps there are
  assert per(1, 1, 64) == per(2, 4, 64) == 1


def test_toy_rarely_checked_loop_runs_an_inner_loop_of_known_trip_count(toy):
  """decode_check_every puts the iterations between two checks in a loop of its own, with a
  constant trip count: the form whose count XLA knows (a GPU then runs it without reading the
  condition back to the host)."""
  model, params = toy
  ids = np.random.default_rng().integers(0, model.vocab, size=(2, 4))
  generate(model, params, ids, max_new_tokens=33, decode_check_every=8)
  _, decode = generation.last_programs()
  loops = _decode_loops(decode.as_text())
  assert sorted(loops) == ["while", "while/body/while"], loops
  assert '"known_trip_count":{"n":"8"}' in loops["while/body/while"], "the inner loop's count"
  generate(model, params, ids, max_new_tokens=33)
  _, decode = generation.last_programs()
  assert list(_decode_loops(decode.as_text())) == ["while"]


def _decode_loops(hlo: str) -> dict[str, str]:
  """{op name under jit(_decode_program): HLO line} of the decode loops (the sampler's own small
  loops are named after other functions)."""
  return {m.group(1): m.group(0)
          for m in re.finditer(r'[^\n]* while\([^\n]*op_name="jit\(_decode_program\)/([\w/]+)"[^\n]*',
                               hlo)}


def test_toy_no_recompilation_across_calls_and_tokens(toy):
  model, params = toy
  generation.clear_cache()
  traces0, decode0 = generation.TRACE_COUNT["generate"], DECODE_TRACES["n"]
  rng = np.random.default_rng()
  sampling = SamplingConfig(temperature=0.9, top_k=10)
  a = generate(model, params, rng.integers(0, 41, (2, 5)), max_new_tokens=64, sampling=sampling,
               seed=1)
  b = generate(model, params, rng.integers(0, 41, (2, 11)), max_new_tokens=64, sampling=sampling,
               seed=2)  # other prompt length in the same bucket (16), other seed
  assert a.compile_s > 0 and b.compile_s == 0.0
  assert generation.TRACE_COUNT["generate"] - traces0 == 1
  assert DECODE_TRACES["n"] - decode0 == 1, "decode_step must be traced once, not once per token"
  assert len(generation._COMPILED) == 1
  generate(model, params, rng.integers(0, 41, (2, 20)), max_new_tokens=64, sampling=sampling)
  assert len(generation._COMPILED) == 2  # bucket 32 is a new program


def test_toy_programs_call_the_host_only_when_streaming(toy):
  """Without a stream callback neither compiled program may hold a host callback (JAX would then
  dispatch it through Python, argument by argument); with one, the decode loop must."""
  model, params = toy
  ids = np.random.default_rng().integers(0, 41, (2, 5))
  generate(model, params, ids, max_new_tokens=6)
  assert all("callback" not in p.as_text() for p in generation.last_programs())
  generate(model, params, ids, max_new_tokens=6, callback=lambda *a: None)
  prefill, decode = generation.last_programs()
  assert "callback" not in prefill.as_text() and "callback" in decode.as_text()


def test_toy_first_token_is_read_before_the_decode_program_is_called(toy):
  """On a GPU the decode program's call returns only when its loop has finished (XLA reads the
  loop condition on the host), so `prefill_s` must stop at the first token read before it; the
  token's copy to the host is queued right behind the prefill."""
  model, params = toy
  generation.clear_cache()
  ids = np.random.default_rng().integers(0, 41, (2, 5))
  plain = generate(model, params, ids, max_new_tokens=6)
  (key, (prefill, decode)), = generation._COMPILED.items()
  events = []

  class WatchedFirst:  # the prefill's first token, noting when the host reads it
    def __init__(self, tokens):
      self.tokens = tokens

    def copy_to_host_async(self):
      events.append("first token copy queued")
      self.tokens.copy_to_host_async()

    def __array__(self, dtype=None, copy=None):
      events.append("first token read")
      return np.asarray(self.tokens, dtype)

  def watched_prefill(*args):
    first, cache, prng = prefill(*args)
    return WatchedFirst(first), cache, prng

  def watched_decode(params, first, cache, prng):
    events.append("decode called")
    return decode(params, first.tokens, cache, prng)

  generation._COMPILED[key] = (watched_prefill, watched_decode)
  try:
    watched = generate(model, params, ids, max_new_tokens=6)
  finally:
    generation.clear_cache()
  assert events == ["first token copy queued", "first token read", "decode called"]
  np.testing.assert_array_equal(watched.tokens, plain.tokens)
  assert 0 < watched.prefill_s and 0 < watched.decode_s


def test_toy_compiler_options_make_their_own_program_with_the_same_tokens(toy):
  """An XLA option (here one the CPU ignores) compiles a second program; greedy tokens agree."""
  model, params = toy
  generation.clear_cache()
  ids = np.random.default_rng().integers(0, 41, (2, 7))
  plain = generate(model, params, ids, max_new_tokens=8)
  tuned = generate(model, params, ids, max_new_tokens=8,
                   compiler_options={"xla_gpu_enable_triton_gemm": False})
  assert len(generation._COMPILED) == 2 and tuned.compile_s > 0
  np.testing.assert_array_equal(plain.tokens, tuned.tokens)
  again = generate(model, params, ids, max_new_tokens=8,
                   compiler_options={"xla_gpu_enable_triton_gemm": False})
  assert again.compile_s == 0.0 and len(generation._COMPILED) == 2


def test_auto_decode_settings_are_tuned_on_hopper_from_b256_only():
  tuned = (4, {"xla_gpu_enable_triton_gemm": False})
  assert generation.auto_decode_settings(256, on_hopper=True) == tuned
  assert generation.auto_decode_settings(1024, on_hopper=True) == tuned
  for batch, hopper in ((255, True), (64, True), (1, True), (256, False), (4096, False)):
    assert generation.auto_decode_settings(batch, on_hopper=hopper) == (1, {}), (batch, hopper)


def test_decode_settings_resolve_auto_and_let_named_options_win(monkeypatch):
  """On a (pretended) Hopper GPU at B = 256: "auto" tunes; the caller's options override it."""
  monkeypatch.setattr(generation, "hopper_unavailable_reason", lambda kernel: None)
  settings = generation.resolve_decode_settings
  off, on = {"xla_gpu_enable_triton_gemm": False}, {"xla_gpu_enable_triton_gemm": True}
  assert settings(256, "auto", "auto", {}) == (4, off)
  assert settings(256, "auto", "auto", on) == (4, on)              # compiler_options win
  assert settings(256, 2, "auto", {}) == (2, off)
  assert settings(256, "auto", None, {}) == (4, {})
  assert settings(256, 1, on, off) == (1, on)                      # decode's own options win
  assert settings(64, "auto", "auto", {}) == (1, {})
  monkeypatch.setattr(generation, "hopper_unavailable_reason", lambda kernel: "no GPU")
  assert settings(256, "auto", "auto", {"a": 1}) == (1, {"a": 1})


def test_toy_auto_decode_options_reach_the_decode_program_only(toy, monkeypatch):
  """With "auto" tuned (threshold lowered to B = 2, Hopper pretended), the prefill compiles with
  the caller's options and the decode program with the tuned ones; the tokens do not change."""
  model, params = toy
  generation.clear_cache()
  ids = np.random.default_rng().integers(0, 41, (2, 7))
  plain = generate(model, params, ids, max_new_tokens=9, decode_unroll=1,
                   decode_compiler_options=None)
  monkeypatch.setattr(generation, "AUTO_DECODE_MIN_BATCH", 2)
  monkeypatch.setattr(generation, "hopper_unavailable_reason", lambda kernel: None)
  compiled = []
  real_compile = generation._compile
  monkeypatch.setattr(generation, "_compile",
                      lambda lowered, options, argument: compiled.append(options) or
                      real_compile(lowered, options, argument))
  tuned = generate(model, params, ids, max_new_tokens=9)
  assert compiled == [{}, {"xla_gpu_enable_triton_gemm": False}]
  np.testing.assert_array_equal(tuned.tokens, plain.tokens)
  assert (tuned.lengths.tolist(), tuned.steps) == (plain.lengths.tolist(), plain.steps)
  compiled.clear()
  fast_math = {"xla_cpu_enable_fast_math": False}
  generate(model, params, ids, max_new_tokens=9, compiler_options=fast_math)
  assert compiled == [fast_math, {"xla_gpu_enable_triton_gemm": False, **fast_math}]


def test_toy_failed_run_drops_effect_tokens_and_the_next_run_works(toy, monkeypatch):
  """A run that fails on the device (an OOM on the H200) must not fail later runs through the
  ordered-effect token JAX carries between programs: generate() drops the tokens and re-raises."""
  from jax._src import dispatch  # pylint: disable=g-import-not-at-top

  model, params = toy
  ids = np.random.default_rng().integers(0, model.vocab, size=(2, 5))
  generation.clear_cache()

  class FailingProgram:
    def compile(self):
      def run(*args):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory (simulated)")
      return run

  sentinel = {"failed-token": object()}
  monkeypatch.setattr(generation, "lower_programs",
                      lambda *args, **kwargs: (FailingProgram(), FailingProgram()))
  monkeypatch.setattr(dispatch.runtime_tokens, "current_tokens", dict(sentinel))
  with pytest.raises(jax.errors.JaxRuntimeError, match="RESOURCE_EXHAUSTED"):
    generate(model, params, ids, max_new_tokens=4)
  assert dispatch.runtime_tokens.current_tokens == {}
  assert generation._RUN == {}
  monkeypatch.undo()
  generation.clear_cache()
  out = generate(model, params, ids, max_new_tokens=4)
  first = np.asarray(model.apply({"params": params}, jnp.asarray(ids)))[:, -1].argmax(-1)
  np.testing.assert_array_equal(out.tokens[:, 0], first)


def test_toy_seeded_sampling_reproducible_and_seed_dependent(toy):
  model, params = toy
  ids = np.random.default_rng().integers(0, model.vocab, size=(4, 6))
  sampling = SamplingConfig(temperature=1.5)
  a = generate(model, params, ids, max_new_tokens=32, sampling=sampling, seed=11)
  b = generate(model, params, ids, max_new_tokens=32, sampling=sampling, seed=11)
  c = generate(model, params, ids, max_new_tokens=32, sampling=sampling, seed=12)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  assert (a.tokens != c.tokens).any()


def test_toy_sampling_never_picks_padded_vocab(toy):
  model, params = toy
  ids = np.random.default_rng().integers(0, 30, size=(8, 4))
  # make the padded columns [30, 41) the most likely by far
  params = jax.tree.map(lambda x: x, params)
  params["head"]["bias"] = params["head"]["bias"].at[30:].add(100.0)
  greedy = generate(model, params, ids, max_new_tokens=8, vocab_size=30)
  assert (greedy.tokens >= 30).all(), "greedy is an argmax over all padded columns"
  sampled = generate(model, params, ids, max_new_tokens=8, vocab_size=30,
                     sampling=SamplingConfig(temperature=1.0))
  assert (sampled.tokens < 30).all()


class CharTokenizer:
  """Token t decodes to chr(ord('a') + t % 26); enough for stop-string tests."""

  def decode(self, ids):
    return "".join(chr(ord("a") + int(t) % 26) for t in ids)


def test_toy_stop_strings_cut_text_and_length(toy):
  model, params = toy
  tok = CharTokenizer()
  ids = np.random.default_rng().integers(0, model.vocab, size=(2, 5))
  free = generate(model, params, ids, max_new_tokens=20, tokenizer=tok)
  text0 = free.texts[0]
  assert text0 == tok.decode(free.tokens[0])
  stop = text0[5:7]
  out = generate(model, params, ids, max_new_tokens=20, tokenizer=tok, stop_strings=[stop])
  cut = text0.find(stop)
  assert out.texts[0] == text0[:cut]
  assert out.finish_reasons[0] == "stop_string"
  assert out.lengths[0] == cut + len(stop)
  assert (out.tokens[0, out.lengths[0]:] == 0).all()
  if stop not in free.texts[1]:
    assert out.texts[1] == free.texts[1] and out.finish_reasons[1] == "length"


def test_bucket_length():
  assert [bucket_length(n) for n in (1, 16, 17, 100, 8000)] == [16, 16, 32, 128, 8192]
  assert bucket_length(37, None) == 37
  assert bucket_length(37, (32, 64, 128)) == 64
  with pytest.raises(ValueError, match="prompt_buckets"):
    bucket_length(200, (32, 64))
  with pytest.raises(ValueError, match="prompt_buckets"):
    bucket_length(3, "pow2")


@pytest.mark.parametrize("kwargs, match", [
    (dict(input_ids=np.zeros((3,), np.int32)), "input_ids must have shape"),
    (dict(input_ids=np.zeros((2, 0), np.int32)), "input_ids must have shape"),
    (dict(input_ids=np.zeros((2, 3), np.float32)), "input_ids must be an integer"),
    (dict(input_ids=-np.ones((2, 3), np.int32)), "input_ids must be >= 0"),
    (dict(attention_mask=np.ones((2, 4), np.int32)), "attention_mask must have the shape"),
    (dict(attention_mask=np.array([[1, 0, 1], [1, 1, 1]])), "LEFT-padded"),
    (dict(attention_mask=np.array([[0, 0, 0], [1, 1, 1]])), "no real token"),
    (dict(attention_mask=np.array([[0, 2, 1], [1, 1, 1]])), "only 0"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(eos_token_id=-1), "eos_token_id"),
    (dict(sampling={"temperature": 1.0}), "sampling must be a SamplingConfig"),
    (dict(stop_strings=["x"]), "need a tokenizer"),
    (dict(stop_strings="x", tokenizer=CharTokenizer()), "not one string"),
    (dict(callback=3), "callback must be callable"),
    (dict(compiler_options=[("xla_gpu_enable_triton_gemm", False)]), "compiler_options must be"),
    (dict(compiler_options={"xla_gpu_enable_triton_gemm": None}), "compiler_options: "),
    (dict(compiler_options={"xla_no_such_option": True}), "compiler_options: .*no_such"),
    (dict(decode_state="half"), "decode_state must be one of"),
    (dict(decode_unroll=0), "decode_unroll must be >= 1"),
    (dict(decode_unroll=2.0), "decode_unroll must be an int"),
    (dict(decode_unroll="fast"), "decode_unroll must be an int >= 1 or 'auto'"),
    (dict(decode_compiler_options="fast"), "decode_compiler_options must be a mapping"),
    (dict(decode_check_every=0), "decode_check_every must be >= 1"),
    (dict(defer_state_writes="yes"), "defer_state_writes must be a bool"),
    (dict(decode_check_every="rarely"), "decode_check_every must be an int >= 1, None or 'auto'"),
    (dict(decode_compiler_options={"xla_gpu_enable_triton_gemm": None}),
     "decode_compiler_options: "),
    (dict(decode_compiler_options={"xla_no_such_option": True}),
     "decode_compiler_options: .*no_such"),
    (dict(compiler_options={"xla_cpu_enable_fast_math": False},
          decode_compiler_options={"xla_no_such_option": True}),
     "^decode_compiler_options: .*no_such"),
])
def test_bad_arguments_raise_named_errors(toy, kwargs, match):
  model, params = toy
  args = dict(input_ids=np.ones((2, 3), np.int32), attention_mask=None, max_new_tokens=4)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    generate(model, params, args.pop("input_ids"), args.pop("attention_mask"), **args)


# ------------------------------------------------------------------------------------------
# The real BasedLM (tiny random configs, fp32, XLA chunked linear attention)
# ------------------------------------------------------------------------------------------

TINY_CONFIGS = {
    # conv, linear attention, sliding window (w = 4: prompts and outputs run past it), conv
    "based": dict(window_size=8),
    # attn-360m-like: every layer MHA with a full KV cache
    "attn": dict(attention_only=True, n_layer=2),
}


@pytest.fixture(scope="module", params=list(TINY_CONFIGS))
def tiny_lm(request):
  from based_jax.config import BasedConfig
  from based_jax.model import BasedLM

  config = BasedConfig.tiny(**TINY_CONFIGS[request.param])
  model = BasedLM(config, dtype=jnp.float32, la_impl="chunked")
  seed = int(np.random.default_rng().integers(1 << 30))
  params = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, 4), jnp.int32))["params"]
  return model, params


def test_model_greedy_decode_matches_full_forwards(tiny_lm):
  """>= 64 recurrent steps (conv ring, LA state, SWA ring wrap, MHA cache) vs full forwards."""
  model, params = tiny_lm
  prompt = np.random.default_rng().integers(0, model.config.vocab_size, size=(11,))
  out = generate(model, params, prompt[None], max_new_tokens=72)
  want = greedy_by_full_forwards(lambda x: model.apply({"params": params}, x), prompt, 72)
  np.testing.assert_array_equal(out.tokens[0], want)
  assert out.lengths.tolist() == [72]


def test_model_left_padded_batch_matches_each_row_alone(tiny_lm):
  model, params = tiny_lm
  rng = np.random.default_rng()
  rows = [rng.integers(0, model.config.vocab_size, size=(n,)) for n in (1, 6, 13, 20)]
  ids, mask = left_pad(rows, pad=int(rng.integers(model.config.vocab_size)))
  batch = generate(model, params, ids, mask, max_new_tokens=16)  # bucket 32: 12..31 pads per row
  assert batch.prompt_length == 32
  apply_fn = lambda x: model.apply({"params": params}, x)
  for i, r in enumerate(rows):  # unpadded, independent path: repeated full forwards
    np.testing.assert_array_equal(batch.tokens[i], greedy_by_full_forwards(apply_fn, r, 16),
                                  err_msg=f"row {i} (length {len(r)})")
  alone = generate(model, params, rows[3][None], max_new_tokens=16, prompt_buckets=None)
  np.testing.assert_array_equal(batch.tokens[3], alone.tokens[0])


def test_model_symmetric_decode_state_gives_the_same_tokens(tiny_lm):
  """The default decode_state, "symmetric" (153-row linear-attention states in the loop), against
  the 273-row loop ("full") and, for one row, against repeated full forwards; left-padded rows
  included."""
  model, params = tiny_lm
  rng = np.random.default_rng()
  rows = [rng.integers(0, model.config.vocab_size, size=(n,)) for n in (3, 17)]
  ids, mask = left_pad(rows, pad=0)
  full = generate(model, params, ids, mask, max_new_tokens=40, decode_state="full")
  sym = generate(model, params, ids, mask, max_new_tokens=40)
  np.testing.assert_array_equal(sym.tokens, full.tokens)
  want = greedy_by_full_forwards(lambda x: model.apply({"params": params}, x), rows[1], 40)
  np.testing.assert_array_equal(sym.tokens[1], want)


def test_model_unrolled_decode_loop_gives_the_same_tokens(tiny_lm):
  """Three decode steps per loop iteration (12 new tokens: 11 decode steps in 4 iterations, the
  last step past the end) against one per iteration, left-padded rows included."""
  model, params = tiny_lm
  rng = np.random.default_rng()
  rows = [rng.integers(0, model.config.vocab_size, size=(n,)) for n in (5, 12)]
  ids, mask = left_pad(rows, pad=0)
  one = generate(model, params, ids, mask, max_new_tokens=12)
  three = generate(model, params, ids, mask, max_new_tokens=12, decode_unroll=3)
  np.testing.assert_array_equal(three.tokens, one.tokens)
  np.testing.assert_array_equal(three.lengths, one.lengths)


@pytest.mark.parametrize("unroll", [1, 3])
def test_model_deferred_state_writes_give_the_same_tokens(tiny_lm, unroll):
  """defer_state_writes: the linear-attention states written once per iteration of `unroll`
  steps; greedy tokens of a left-padded batch equal to the plain loop's (a no-op at one step per
  iteration), and the loop's body still copies no cache."""
  model, params = tiny_lm
  rng = np.random.default_rng()
  rows = [rng.integers(0, model.config.vocab_size, size=(n,)) for n in (5, 12)]
  ids, mask = left_pad(rows, pad=0)
  plain = generate(model, params, ids, mask, max_new_tokens=14, decode_unroll=unroll)
  deferred = generate(model, params, ids, mask, max_new_tokens=14, decode_unroll=unroll,
                      defer_state_writes=True)
  np.testing.assert_array_equal(deferred.tokens, plain.tokens)
  np.testing.assert_array_equal(deferred.lengths, plain.lengths)
  _, decode = generation.last_programs()
  body = _while_body_text(decode.as_text())
  copies = re.findall(r"= (\w+\[[\d,]*\])\S* copy\(", body)
  assert all(shape.count(",") < 2 for shape in copies), copies
  has_la = model.config.linear_attention is not None
  pending_k = f"f32[2,{model.config.la_num_heads},{unroll - 1},16]"   # [B, H, U - 1, F]
  assert (pending_k in body) == (unroll > 1 and has_la), "pending keys iff U > 1 and LA layers"


def _while_body_text(hlo: str, loop_line: str | None = None) -> str:
  """The text of a while loop's body computation in an optimized HLO module: of the loop in
  `loop_line` (its HLO line), or of the module's only loop."""
  bodies = re.findall(r"body=%?([\w.\-]+)", hlo if loop_line is None else loop_line)
  assert len(bodies) == 1, bodies
  match = re.search(r"\n%?" + re.escape(bodies[0]) + r" [^\n]*\{\n(.*?)\n\}\n", hlo, re.S)
  assert match, bodies[0]
  return match.group(1)


def test_model_decode_loop_copies_no_cache(tiny_lm):
  """Every cache is updated in place inside the decode loop: XLA copies no array of rank >= 3
  in the loop's body (a BaseConv history rebuilt from a shifted copy was copied every step)."""
  model, params = tiny_lm
  ids = np.random.default_rng().integers(0, model.config.vocab_size, size=(2, 9))
  generate(model, params, ids, max_new_tokens=5, prompt_buckets=None)
  _, decode = generation.last_programs()
  body = _while_body_text(decode.as_text())
  copies = re.findall(r"= (\w+\[[\d,]*\])\S* copy\(", body)
  assert copies, "fixture: the loop copies at least its step counter"
  assert all(shape.count(",") < 2 for shape in copies), copies


def test_model_rarely_checked_decode_loop_copies_no_cache(tiny_lm):
  """As above for the inner loop that decode_check_every adds: its body updates every cache in
  place. The tokens are those of the plain loop."""
  model, params = tiny_lm
  ids = np.random.default_rng().integers(0, model.config.vocab_size, size=(2, 9))
  plain = generate(model, params, ids, max_new_tokens=9, prompt_buckets=None)
  checked = generate(model, params, ids, max_new_tokens=9, prompt_buckets=None,
                     decode_check_every=4)
  np.testing.assert_array_equal(checked.tokens, plain.tokens)
  _, decode = generation.last_programs()
  hlo = decode.as_text()
  body = _while_body_text(hlo, _decode_loops(hlo)["while/body/while"])
  copies = re.findall(r"= (\w+\[[\d,]*\])\S* copy\(", body)
  assert all(shape.count(",") < 2 for shape in copies), copies
  assert re.search(r"dynamic-update-slice\(", body) or "dynamic_update_slice" in body, (
      "fixture: the inner body holds the decode step")


@pytest.mark.gpu
def test_symmetric_decode_state_on_the_gpu_gives_the_same_tokens():
  """The 153-row decode loop compiled by XLA for the GPU (gathers of the feature map, the fused
  state update) against the default 273-row loop, 64 tokens of a left-padded batch."""
  from based_jax.config import BasedConfig
  from based_jax.model import BasedLM

  model = BasedLM(BasedConfig.tiny(window_size=8), dtype=jnp.float32)
  seed = int(np.random.default_rng().integers(1 << 30))
  params = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, 4), jnp.int32))["params"]
  rng = np.random.default_rng()
  ids, mask = left_pad([rng.integers(0, model.config.vocab_size, size=(n,)) for n in (5, 40)], 0)
  runs = {state: generate(model, params, ids, mask, max_new_tokens=64, decode_state=state)
          for state in ("full", "symmetric")}
  np.testing.assert_array_equal(runs["symmetric"].tokens, runs["full"].tokens)


def test_model_sampling_seeds_and_single_compilation(tiny_lm):
  model, params = tiny_lm
  rng = np.random.default_rng()
  vocab = model.config.vocab_size
  assert vocab < model.config.vocab_size_padded, "fixture: the config must pad its vocab"
  sampling = SamplingConfig(temperature=1.0, top_p=0.95)
  traces = generation.TRACE_COUNT["generate"]
  ids5 = rng.integers(0, vocab, size=(3, 5))
  a = generate(model, params, ids5, max_new_tokens=24, sampling=sampling, seed=5)
  b = generate(model, params, ids5, max_new_tokens=24, sampling=sampling, seed=5)
  c = generate(model, params, rng.integers(0, vocab, size=(3, 9)), max_new_tokens=24,
               sampling=sampling, seed=6)
  d = generate(model, params, ids5, max_new_tokens=24, sampling=sampling, seed=6)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  assert (a.tokens != d.tokens).any()
  assert generation.TRACE_COUNT["generate"] - traces == 1
  assert b.compile_s == c.compile_s == d.compile_s == 0.0
  for out in (a, c, d):
    assert (out.tokens < vocab).all(), "padded vocab ids must never be sampled"
  with pytest.raises(ValueError, match="padded vocab size"):
    generate(model, params, [[model.config.vocab_size_padded]], max_new_tokens=2)


# ------------------------------------------------------------------------------------------
# Greedy tokens vs the PyTorch reference's recurrent generation, from hub-format checkpoints
# ------------------------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("case_name", ["mixed-Dh16-w7", "gnorm-convbias-Dh16", "attn-Dh16"])
def test_bucketed_left_padded_batch_matches_torch_recurrence(case_name, tmp_path):
  """Each row of a left-padded, bucketed batch == torch greedy recurrence on that row alone."""
  torch = pytest.importorskip("torch")
  from based_jax.pretrained import from_pretrained
  from tests.torch_ref import checkpoints as ck

  case = ck.CASES_BY_NAME[case_name]
  seed = int(np.random.default_rng().integers(1 << 30))
  ck.write_hub_dir(tmp_path, case.config, case.build(seed=seed), "bin")
  model, params = from_pretrained(tmp_path, dtype=jnp.float32, la_impl="chunked")
  reference = case.build(seed=seed).double()
  rng = np.random.default_rng()
  rows = [rng.integers(0, case.config["vocab_size"], size=(n,)) for n in (3, 10, 21)]
  ids, mask = left_pad(rows, pad=0)
  num_new = 40
  out = generate(model, params, ids, mask, max_new_tokens=num_new)
  for i, r in enumerate(rows):
    want = reference.generate_greedy(torch.from_numpy(r[None]), num_new).numpy()[0]  # [T]
    np.testing.assert_array_equal(out.tokens[i], want, err_msg=f"{case_name} row {i}")


def test_model_two_new_tokens_need_no_more_memory_than_three(tiny_lm):
  """max_new_tokens=2 is a loop of at most one step, which XLA would turn into a conditional and
  schedule with far more temporaries (6.6x for based-360m at B = 128 on the H200); the compiled
  program's temporaries must not grow when the loop gets one step shorter."""
  model, params = tiny_lm

  def temp_bytes(new_tokens):
    programs = generation.lower_programs(
        params, jax.ShapeDtypeStruct((16, 512), jnp.int32), None, jax.random.key(0),
        model=model, max_new_tokens=new_tokens, sampling=SamplingConfig(), eos_token_id=None,
        pad_token_id=0, vocab_size=None, stream=False)
    return sum(p.compile().memory_analysis().temp_size_in_bytes for p in programs)

  two, three = temp_bytes(2), temp_bytes(3)
  assert two <= 1.05 * three, f"temporaries: {two} bytes for 2 new tokens, {three} for 3"

"""BasedConfig: config.json parsing, upstream defaults, layer layout, presets, errors."""

import json

import pytest

from based_jax.config import (BasedConfig, ConvMixerConfig, LinearAttentionMixerConfig,
                              SlidingWindowMixerConfig)

# A config.json in the shape of the released based-360m one (GPT2Config keys + mixer dicts),
# written from based_model.md §1.3, with keys this port must ignore.
BASED_360M_JSON = {
    "architectures": ["GPTLMHeadModel"], "model_type": "gpt2", "n_embd": 1024, "n_head": 16,
    "n_layer": 27, "vocab_size": 50257, "pad_vocab_size_multiple": 8, "n_inner": 2048,
    "n_positions": 0, "layer_norm_epsilon": 1e-5, "rms_norm": True, "residual_in_fp32": True,
    "tie_word_embeddings": True, "activation_function": "swiglu", "rotary_emb_fraction": 1,
    "qkv_proj_bias": False, "out_proj_bias": False, "mlp_fc1_bias": False, "mlp_fc2_bias": False,
    "fused_mlp": False, "fused_dropout_add_ln": True, "use_flash_attn": True, "resid_pdrop": 0.0,
    "mixer": {"_target_": "based.models.mixers.convolution.BaseConv", "l_max": 2048,
              "use_bias": True, "expand_proj": 4, "kernel_sizes": 3},
    "alt_mixer": {"_target_": "based.models.mixers.linear_attention.LinearAttention",
                  "l_max": 2048, "feature_dim": 16, "num_key_value_heads": 16, "num_heads": 16,
                  "feature_map": {"_target_": "based.models.mixers.linear_attention.TaylorExp",
                                  "input_dim": 16}},
    "alt_mixer_2": {"_target_": "based.models.mixers.slide_attention.SlidingAttention",
                    "window_size": 128, "num_heads": 16, "causal": True},
    "alt_mixer_layers": [1, 6, 11, 16, 21], "alt_mixer_2_layers": [2, 7, 12, 17, 22],
}


def test_from_hf_dict_matches_preset_and_roundtrips():
  cfg = BasedConfig.from_hf_dict(BASED_360M_JSON)
  preset = BasedConfig.based_360m()
  # Same architecture as the preset; only the preserved extra mixer keys differ.
  for name in ("n_embd", "n_head", "n_layer", "vocab_size_padded", "mlp_hidden", "conv_d_inner",
               "head_dim", "la_head_dim", "rotary_dim", "window_left", "layer_types", "la_eps"):
    assert getattr(cfg, name) == getattr(preset, name), name
  again = BasedConfig.from_hf_dict(json.loads(json.dumps(cfg.to_dict())))
  assert again == cfg
  assert hash(again) == hash(cfg)
  # Unknown mixer keys survive the round trip (the converter writes to_dict as config.json).
  assert cfg.to_dict()["alt_mixer"]["feature_map"]["input_dim"] == 16
  assert cfg.to_dict()["mixer"]["kernel_sizes"] == 3


@pytest.mark.parametrize("preset", ["based_360m", "based_1b", "attn_360m", "tiny"])
def test_presets_roundtrip(preset):
  cfg = getattr(BasedConfig, preset)()
  assert BasedConfig.from_hf_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_preset_values_from_reference():
  # Numbers from based_model.md §1.3 (not from this code).
  c = BasedConfig.based_360m()
  assert (c.vocab_size_padded, c.mlp_hidden, c.conv_d_inner, c.head_dim, c.window_left) == (
      50264, 2048, 2048, 64, 64)
  layout = "C L S C C C L S C C C L S C C C L S C C C L S C C C C".split()
  assert c.layer_types == tuple({"C": "conv", "L": "linear_attention",
                                 "S": "sliding_window"}[x] for x in layout)
  b = BasedConfig.based_1b()
  assert (b.vocab_size_padded, b.mlp_hidden, b.head_dim, b.la_head_dim, b.rotary_dim,
          b.window_size) == (50264, 3584, 112, 112, 112, 256)
  assert b.layer_types.count("conv") == 22
  a = BasedConfig.attn_360m()
  assert (a.vocab_size_padded, a.mlp_hidden, a.rotary_dim) == (50272, 2816, 32)
  assert set(a.layer_types) == {"mha"}


def test_missing_keys_take_upstream_defaults():
  d = {"n_embd": 1024, "n_head": 16, "n_layer": 2, "rms_norm": True, "activation_function":
       "swiglu", "n_positions": 0}
  c = BasedConfig.from_hf_dict(d)
  assert c.mlp_hidden == 2816           # ceil_256(int(8 * 1024 / 3))
  assert c.vocab_size_padded == 50257   # pad_vocab_size_multiple defaults to 1
  assert c.qkv_proj_bias and c.out_proj_bias and c.mlp_fc1_bias and c.mlp_fc2_bias
  assert not c.residual_in_fp32
  assert c.rotary_dim == 0
  assert c.layer_types == ("mha", "mha")
  # GPT2Config defaults that this port refuses, with the field named.
  with pytest.raises(ValueError, match="activation_function"):
    BasedConfig.from_hf_dict({"n_embd": 64, "n_head": 4, "n_layer": 1, "rms_norm": True,
                              "n_positions": 0})
  with pytest.raises(ValueError, match="n_positions"):
    BasedConfig.from_hf_dict({"n_embd": 64, "n_head": 4, "n_layer": 1, "rms_norm": True,
                              "activation_function": "swiglu"})


def test_aliases_and_overrides():
  d = dict(BASED_360M_JSON)
  for name, alias in (("n_embd", "hidden_size"), ("n_head", "num_attention_heads"),
                      ("n_layer", "num_hidden_layers")):
    d[alias] = d.pop(name)
  c = BasedConfig.from_hf_dict(d, vocab_size_padded=50304, la_output_norm=True, conv_bias=True,
                               alt_mixer_2={"_target_": "slide_attention.SlidingAttention",
                                            "window_size": 64})
  assert (c.n_embd, c.n_head, c.n_layer) == (1024, 16, 27)
  assert c.vocab_size_padded == 50304 and c.la_output_norm and not c.la_normalize
  assert c.window_left == 32
  with pytest.raises(ValueError, match="unknown override"):
    BasedConfig.from_hf_dict(d, not_a_field=1)


def test_layer_rule_alt_mixer_2_wins_and_null_slot_is_mha():
  d = dict(BASED_360M_JSON, n_layer=4, alt_mixer_layers=[1, 2], alt_mixer_2_layers=[2, 3])
  assert BasedConfig.from_hf_dict(d).layer_types == (
      "conv", "linear_attention", "sliding_window", "sliding_window")
  d["alt_mixer_2"] = None
  assert BasedConfig.from_hf_dict(d).layer_types == ("conv", "linear_attention", "mha", "mha")
  d["mixer"] = None
  assert BasedConfig.from_hf_dict(d).layer_types[0] == "mha"


def test_la_eps_rule():
  assert BasedConfig.based_360m().la_eps == 1e-12
  d = dict(BASED_360M_JSON)
  d["alt_mixer"] = dict(d["alt_mixer"], parallel_implementation="fla_parallel")
  assert BasedConfig.from_hf_dict(d).la_eps == 1e-6


@pytest.mark.parametrize("kwargs, field", [
    (dict(n_embd=65), "n_embd"),
    (dict(alt_mixer_layers=(9,)), "alt_mixer_layers"),
    (dict(rotary_emb_fraction=1.5), "rotary_emb_fraction"),
    (dict(n_head_kv=2), "n_head_kv"),
    (dict(alt_mixer=LinearAttentionMixerConfig(feature_dim=8, num_heads=4)), "feature_dim"),
    (dict(vocab_size_padded=50), "vocab_size_padded"),
    (dict(n_layer=0), "n_layer"),
])
def test_bad_values_raise_naming_the_field(kwargs, field):
  with pytest.raises(ValueError, match=field):
    BasedConfig.tiny(**kwargs)


def test_bad_mixer_target():
  d = dict(BASED_360M_JSON, mixer={"_target_": "some.other.Hyena"})
  with pytest.raises(ValueError, match="mixer._target_"):
    BasedConfig.from_hf_dict(d)


def test_tiny_mixers_are_dataclasses():
  c = BasedConfig.tiny()
  assert isinstance(c.mixer, ConvMixerConfig)
  assert isinstance(c.alt_mixer_2, SlidingWindowMixerConfig)
  with pytest.raises(Exception):
    c.n_embd = 3  # frozen


def test_alias_wins_when_config_json_has_both_spellings():
  # GPT2Config sets aliased kwargs after its named ones: max_position_embeddings=0 beats
  # n_positions=2048, which is how the released Based configs switch position embeddings off.
  d = BasedConfig.based_360m().to_dict()
  d["n_positions"] = 2048
  d["max_position_embeddings"] = 0
  assert BasedConfig.from_hf_dict(d).n_positions == 0

"""Reference DiT configs (the fields of a released `config.json`)."""

from __future__ import annotations

import json
from pathlib import Path


def _layer_types(n: int) -> list[str]:
    return ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n)]


# The released 2B family (docs/design.md §2.2); turbo flags. Built on meta it has exactly the key set
# and shapes of reference/keys-v15-2b.json.
RELEASED_2B_CONFIG: dict = {
    "architectures": ["AceStepConditionGenerationModel"], "attention_bias": False, "attention_dropout": 0.0,
    "audio_acoustic_hidden_dim": 64, "data_proportion": 0.5, "fsq_dim": 2048,
    "fsq_input_levels": [8, 8, 8, 5, 5, 5], "fsq_input_num_quantizers": 1, "head_dim": 128,
    "hidden_act": "silu", "hidden_size": 2048, "in_channels": 192, "initializer_range": 0.02,
    "intermediate_size": 6144, "is_turbo": True, "layer_types": _layer_types(24),
    "max_position_embeddings": 32768, "model_type": "acestep", "model_version": "turbo",
    "num_attention_heads": 16, "num_attention_pooler_hidden_layers": 2, "num_audio_decoder_hidden_layers": 24,
    "num_hidden_layers": 24, "num_key_value_heads": 8, "num_lyric_encoder_hidden_layers": 8,
    "num_timbre_encoder_hidden_layers": 4, "patch_size": 2, "pool_window_size": 5, "rms_norm_eps": 1e-06,
    "rope_scaling": None, "rope_theta": 1000000, "sliding_window": 128, "text_hidden_dim": 1024,
    "timbre_fix_frame": 750, "timbre_hidden_dim": 64, "timestep_mu": -0.4, "timestep_sigma": 1.0,
    "use_cache": True, "use_sliding_window": True, "vocab_size": 64003,
}

# Same field set with tiny sizes (as golden/tiny-turbo).
TINY_DIT_CONFIG: dict = dict(
    RELEASED_2B_CONFIG, fsq_dim=64, head_dim=16, hidden_size=64, intermediate_size=96,
    layer_types=_layer_types(4), max_position_embeddings=4096, num_attention_heads=4,
    num_attention_pooler_hidden_layers=1, num_audio_decoder_hidden_layers=4, num_hidden_layers=4,
    num_key_value_heads=2, num_lyric_encoder_hidden_layers=2, num_timbre_encoder_hidden_layers=2,
    sliding_window=3, text_hidden_dim=48,
)


# The released XL family (docs/design.md §2.4): a 2560-wide, 32-layer decoder (32 query heads x 128, so
# q_proj is [4096, 2560]) fed by the 2B-width condition encoder. Built on meta it has exactly the
# key set and shapes of reference/xl/keys-v15-xl.json (829 keys, 4,987,310,726 parameters).
ENCODER_FIELDS = ("encoder_hidden_size", "encoder_intermediate_size", "encoder_num_attention_heads",
                  "encoder_num_key_value_heads")
RELEASED_XL_CONFIG: dict = dict(
    RELEASED_2B_CONFIG, hidden_size=2560, intermediate_size=9728, num_hidden_layers=32,
    num_audio_decoder_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
    layer_types=_layer_types(32), encoder_hidden_size=2048, encoder_intermediate_size=6144,
    encoder_num_attention_heads=16, encoder_num_key_value_heads=8,
)

# XL-shaped tiny config (as golden-xl/tiny-xl-turbo): decoder 96 wide with 8 heads x 16 (8 x 16 != 96,
# as XL's 32 x 128 != 2560), condition encoder / tokenizers / null embedding 64 wide.
TINY_XL_DIT_CONFIG: dict = dict(
    TINY_DIT_CONFIG, hidden_size=96, intermediate_size=160, num_attention_heads=8, num_key_value_heads=2,
    head_dim=16, encoder_hidden_size=64, encoder_intermediate_size=96, encoder_num_attention_heads=4,
    encoder_num_key_value_heads=2,
)


def is_xl_config(config: dict) -> bool:
    """An official config with the four `encoder_*` fields describes an XL model (docs/design.md §2.4)."""
    return all(config.get(f) is not None for f in ENCODER_FIELDS)


def model_family(config: dict) -> str:
    """"XL" or "2B": the architecture family of an official config.json."""
    return "XL" if is_xl_config(config) else "2B"


def decoder_family(decoder) -> str:
    """The family of a loaded diffusers decoder: XL's decoder is wider than its condition encoder."""
    config = decoder.config
    width = config.get("encoder_hidden_size")
    return "XL" if width is not None and width != config.get("hidden_size") else "2B"


def load_config_file(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))

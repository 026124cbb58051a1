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


def load_config_file(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))

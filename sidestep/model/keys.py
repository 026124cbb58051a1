"""Official ACE-Step 1.5 checkpoint key names <-> diffusers module names.

The released `model.safetensors` holds the whole `AceStepConditionGenerationModel`
(`decoder.*`, `encoder.*`, `tokenizer.*`, `detokenizer.*`, `null_condition_emb`).
diffusers splits it into separate modules whose parameter names differ only by the
fixed renaming below (docs/design.md §1.2). Everything here is pure string work.
"""

from __future__ import annotations

# Applied in order to the key *after* its top-level prefix is dropped. The leading and
# trailing dots make each rule match whole path components only.
_RENAMES: tuple[tuple[str, str], ...] = (
    (".q_proj.", ".to_q."),
    (".k_proj.", ".to_k."),
    (".v_proj.", ".to_v."),
    (".o_proj.", ".to_out.0."),
    (".q_norm.", ".norm_q."),
    (".k_norm.", ".norm_k."),
    ("proj_in.1.", "proj_in_conv."),
    ("proj_out.1.", "proj_out_conv."),
)

# official top-level prefix -> name of the diffusers module that receives it
PREFIX_TO_MODULE: dict[str, str] = {
    "decoder.": "transformer",
    "encoder.": "condition_encoder",
    "tokenizer.": "audio_tokenizer",
    "detokenizer.": "audio_token_detokenizer",
}

NULL_CONDITION_KEY = "null_condition_emb"


def _rename(path: str, rules: tuple[tuple[str, str], ...]) -> str:
    padded = "." + path
    for old, new in rules:
        padded = padded.replace(old if old.startswith(".") else "." + old,
                                new if new.startswith(".") else "." + new)
    return padded[1:]


def official_to_diffusers(key: str) -> tuple[str, str]:
    """Map one official key to `(module, diffusers parameter name)`.

    Raises KeyError for a key no diffusers module can hold.
    """
    if key == NULL_CONDITION_KEY:
        return "condition_encoder", NULL_CONDITION_KEY
    for prefix, module in PREFIX_TO_MODULE.items():
        if key.startswith(prefix):
            return module, _rename(key[len(prefix):], _RENAMES)
    raise KeyError(key)


def diffusers_to_official(module: str, name: str) -> str:
    """Inverse of `official_to_diffusers`."""
    if module == "condition_encoder" and name == NULL_CONDITION_KEY:
        return NULL_CONDITION_KEY
    prefix = {m: p for p, m in PREFIX_TO_MODULE.items()}[module]
    inverse = tuple((new, old) for old, new in reversed(_RENAMES))
    return prefix + _rename(name, inverse)


# Decoder-relative attention projection names: ACE-Step's own (what adapter files and
# users say) vs. diffusers' (what the training model calls its modules).
PROJ_OFFICIAL_TO_DIFFUSERS = {"q_proj": "to_q", "k_proj": "to_k", "v_proj": "to_v", "o_proj": "to_out.0"}
PROJ_DIFFUSERS_TO_OFFICIAL = {v: k for k, v in PROJ_OFFICIAL_TO_DIFFUSERS.items()}


def decoder_path_to_official(path: str) -> str:
    """`layers.3.self_attn.to_out.0` -> `layers.3.self_attn.o_proj` (decoder-relative)."""
    return _rename(path + ".", tuple((".%s." % d, ".%s." % o) for d, o in PROJ_DIFFUSERS_TO_OFFICIAL.items()))[:-1]


def decoder_path_to_diffusers(path: str) -> str:
    """`layers.3.self_attn.o_proj` -> `layers.3.self_attn.to_out.0` (decoder-relative)."""
    return _rename(path + ".", tuple((".%s." % o, ".%s." % d) for o, d in PROJ_OFFICIAL_TO_DIFFUSERS.items()))[:-1]

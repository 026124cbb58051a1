"""Tiny random ACE-Step 1.5 checkpoints in the official on-disk layout.

`write_tiny_checkpoint_root` writes a folder that looks exactly like a released checkpoints
root (a DiT folder with `config.json` + `model.safetensors` under the released key names -
or, for XL variants, shards `model-0000X-of-0000N.safetensors` + `model.safetensors.index.json` -
+
`silence_latent.pt`, a diffusers `vae/`, a transformers `Qwen3-Embedding-0.6B/` with a
tokenizer built here), only with tiny sizes and random weights. Tests and `train.py demo`
load it through exactly the code that loads real checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from sidestep.model.configs import TINY_DIT_CONFIG, TINY_XL_DIT_CONFIG
from sidestep.model.keys import diffusers_to_official
from sidestep.model.loader import INDEX_FILE, SILENCE_FILE, WEIGHTS_FILE, build_modules

TEXT_ENCODER_DIR = "Qwen3-Embedding-0.6B"
VAE_DIR = "vae"

# docs/design.md §1.5: the smallest AutoencoderOobleck with 64-channel latents at 25 frames/s.
TINY_VAE_CONFIG: dict = dict(encoder_hidden_size=128, downsampling_ratios=[2, 4, 4, 6, 10],
                             channel_multiples=[1, 1, 1, 1, 1], decoder_channels=8,
                             decoder_input_channels=64, audio_channels=2, sampling_rate=48000)

SILENCE_FRAMES = 15000  # as long as the released one must be (600 s at 25 Hz, docs/design.md §2.1)

_TOKENIZER_CORPUS = [
    "# Instruction\nFill the audio semantic mask based on the given conditions:\n\n# Caption\n",
    "# Metas\n- bpm: N/A\n- timesignature: 4\n- keyscale: C major\n- duration: 30 seconds\n",
    "[Instrumental] [Verse] [Chorus] [Bridge] la la la oh yeah love night light heart",
    "ambient electronic rock pop jazz piano guitar drums synth bass vocals calm energetic",
    "0123456789 # Languages\nen\n\n# Lyric\n",
]
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


XL_SHARDS = 2  # tiny XL folders are sharded like the released ones


def write_dit_folder(folder: Path, config: dict | None = None, seed: int = 0,
                     silence: torch.Tensor | None = None, shards: int | None = None) -> Path:
    """A DiT folder: config.json, model.safetensors (official names), silence_latent.pt.

    With `shards`, the weights go to `model-0000X-of-0000N.safetensors` + the index instead.
    """
    config = dict(TINY_DIT_CONFIG if config is None else config)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tensors = {}
    for module_name, module in build_modules(config, device="cpu").items():
        for name, tensor in module.state_dict().items():
            if name == "silence_latent" or name.startswith("quantizer._") or name == "quantizer.scales":
                continue
            # Random init differs per module type; re-draw so every tensor is non-trivial.
            tensors[diffusers_to_official(module_name, name)] = torch.randn_like(tensor) * 0.05 + (
                1.0 if name.endswith(("norm.weight", "layernorm.weight", "norm_q.weight", "norm_k.weight",
                                      "norm_out.weight")) else 0.0)
    tensors = {k: v.contiguous() for k, v in sorted(tensors.items())}
    if shards:
        write_shards(folder, tensors, shards)
    else:
        save_file(tensors, str(folder / WEIGHTS_FILE))
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if silence is None:
        silence = torch.randn(1, config["audio_acoustic_hidden_dim"], 1) * 0.1
    torch.save(silence.expand(1, -1, SILENCE_FRAMES).clone(), folder / SILENCE_FILE)
    return folder


def shard_name(i: int, n: int) -> str:
    return f"model-{i:05d}-of-{n:05d}.safetensors"


def split_into_shards(shapes: dict[str, tuple[int, ...]], n: int, itemsize: int) -> list[list[str]]:
    """Keys in order, cut into `n` consecutive groups of about equal bytes (as HF's sharding does)."""
    sizes = {k: itemsize * int(torch.Size(s).numel()) for k, s in shapes.items()}
    target = sum(sizes.values()) / n
    groups: list[list[str]] = [[]]
    filled = 0
    for key in sorted(sizes):
        if filled >= target * len(groups) and len(groups) < n:
            groups.append([])
        groups[-1].append(key)
        filled += sizes[key]
    return groups


def write_index(folder: Path, groups: list[list[str]], total_size: int) -> None:
    n = len(groups)
    weight_map = {k: shard_name(i, n) for i, keys in enumerate(groups, 1) for k in keys}
    (folder / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total_size},
                                                 "weight_map": dict(sorted(weight_map.items()))}, indent=2))


def write_shards(folder: Path, tensors: dict[str, torch.Tensor], n: int) -> None:
    """The official sharded layout: n shard files + `model.safetensors.index.json` (key -> shard)."""
    itemsize = next(iter(tensors.values())).element_size()
    groups = split_into_shards({k: tuple(v.shape) for k, v in tensors.items()}, n, itemsize)
    for i, keys in enumerate(groups, 1):
        save_file({k: tensors[k] for k in keys}, str(folder / shard_name(i, len(groups))),
                  metadata={"format": "pt"})
    write_index(folder, groups, sum(v.numel() * v.element_size() for v in tensors.values()))


def write_vae_folder(folder: Path, seed: int = 0) -> Path:
    from diffusers import AutoencoderOobleck

    torch.manual_seed(seed)
    AutoencoderOobleck(**TINY_VAE_CONFIG).save_pretrained(folder)
    return folder


def build_tokenizer():
    """A byte-level BPE tokenizer trained here, with Qwen's special tokens, padding right."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_TOKENIZER_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   padding_side="right", model_max_length=32768)


def write_text_encoder_folder(folder: Path, hidden_size: int, seed: int = 0) -> Path:
    from transformers import Qwen3Config, Qwen3Model

    tokenizer = build_tokenizer()
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=hidden_size // 4, max_position_embeddings=4096,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    Qwen3Model(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_variant_config(variant: str) -> dict:
    """Config for a tiny official variant: turbo, base, sft, or xl-turbo, xl-base, xl-sft (XL-shaped)."""
    xl = variant.startswith("xl-")
    config = dict(TINY_XL_DIT_CONFIG if xl else TINY_DIT_CONFIG)
    base = variant[3:] if xl else variant
    config["is_turbo"] = base == "turbo"
    config["model_version"] = base
    return config


def write_tiny_checkpoint_root(root: str | Path, variants: tuple[str, ...] = ("turbo",), seed: int = 0) -> Path:
    """Write a complete tiny checkpoints root: `acestep-v15-<variant>/`, `vae/`, `Qwen3-Embedding-0.6B/`.

    Variants `xl-turbo` / `xl-base` / `xl-sft` are XL-shaped and sharded (`XL_SHARDS` files + index).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    write_vae_folder(root / VAE_DIR, seed=seed)
    silence = _encoded_silence(root / VAE_DIR)
    for i, variant in enumerate(variants):
        write_dit_folder(root / f"acestep-v15-{variant}", tiny_variant_config(variant), seed=seed + i, silence=silence,
                         shards=XL_SHARDS if variant.startswith("xl-") else None)
    write_text_encoder_folder(root / TEXT_ENCODER_DIR, TINY_DIT_CONFIG["text_hidden_dim"], seed=seed)
    return root


def _encoded_silence(vae_dir: Path) -> torch.Tensor:
    """What the released silence latent is: the VAE's mean latent of digital silence ([1, 64, 1])."""
    from diffusers import AutoencoderOobleck

    vae = AutoencoderOobleck.from_pretrained(vae_dir)
    with torch.no_grad():
        latent = vae.encode(torch.zeros(1, 2, 1920 * 8)).latent_dist.mean  # [1, 64, 8]
    return latent[:, :, 4:5].clone()

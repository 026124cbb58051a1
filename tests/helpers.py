"""Test data builders (real tensors in the preprocessed on-disk format, docs/design.md §5.6)."""

from pathlib import Path

import torch


# Real songs never share a length: the default dataset is 9 songs of 9 lengths (latent frames).
DISTINCT_FRAMES = (24, 30, 36, 27, 33, 39, 21, 45, 42)


def write_tensor_dataset(folder: Path, n: int = 9, frames=DISTINCT_FRAMES, hidden: int = 64, cond_len: int = 21,
                         seed: int = 0, silence: torch.Tensor | None = None) -> Path:
    """`n` samples shaped like preprocessing output (tiny model: D=64), plus manifest.json; sample i has
    frames[i % len(frames)] latent frames."""
    from sidestep.data.manifest import write_dataset

    g = torch.Generator().manual_seed(seed)
    samples = {}
    for i in range(n):
        T = frames[i % len(frames)]
        valid = cond_len - 3 - i % 3
        src = silence[0, :T] if silence is not None else torch.zeros(T, 64)
        samples[f"song{i}.pt"] = {
            "target_latents": torch.randn(T, 64, generator=g),
            "attention_mask": torch.ones(T),
            "encoder_hidden_states": torch.randn(cond_len, hidden, generator=g),
            "encoder_attention_mask": torch.arange(cond_len) < valid,
            "context_latents": torch.cat([src, torch.ones(T, 64)], dim=-1),
            "metadata": {"filename": f"song{i}.wav", "caption": f"song {i}", "duration": T / 25},
        }
    return write_dataset(folder, samples, {"name": "test", "custom_tag": ""})


def train_tiny_lora(root: Path, tmp: Path, epochs: int = 2, **changes):
    """A LoRA trained for a few steps on the tiny turbo model (~2 s): (TrainResult, output dir)."""
    from sidestep.config import Config
    from sidestep.model.loader import load_dit
    from sidestep.train.recipe import train

    silence = load_dit(root / "acestep-v15-turbo").silence_latent()
    dataset = write_tensor_dataset(tmp / "ds", n=2, silence=silence)
    settings = dict(checkpoint_dir=str(root), dataset_dir=str(dataset), output_dir=str(tmp / "out"), epochs=epochs,
                    rank=4, alpha=8, learning_rate=1e-2, warmup_steps=0, gradient_accumulation=1, dropout=0.0,
                    num_workers=0, save_every=100, scheduler_type="constant")
    settings.update(changes)
    return train(Config(**settings), "fixed", quiet=True), tmp / "out"


def comfyui_to_side_step(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of the ComfyUI export's key mapping (alpha entries dropped): Side-Step's file keys."""
    from sidestep.train.export import COMFY_PREFIX, PEFT_PREFIX

    out = {}
    for key, value in tensors.items():
        if key.startswith(COMFY_PREFIX):
            if not key.endswith(".alpha"):
                out[PEFT_PREFIX + key[len(COMFY_PREFIX):]] = value
        else:
            out[key] = value
    return out


def LokrAdapter(decoder, modules, linear_dim, linear_alpha, factor=-1,  # noqa: N802
                decompose_both=False, use_tucker=False, use_scalar=False, weight_decompose=False):
    """LoKR with the LyCORIS options by name (as `Lokr.settings` names them)."""
    from sidestep.adapters.lokr import Lokr

    return Lokr(decoder, modules, dict(linear_dim=linear_dim, linear_alpha=linear_alpha, factor=factor,
                                       decompose_both=decompose_both, use_tucker=use_tucker, use_scalar=use_scalar,
                                       weight_decompose=weight_decompose))


class OfficialNames(torch.nn.Module):
    """ACE-Step's reference module names (layers.i.self_attn.q_proj, ...) over a diffusers decoder's own Linear
    objects: what PEFT sees when it loads an adapter onto ACE-Step's decoder."""

    def __init__(self, decoder):
        super().__init__()
        self.layers = torch.nn.ModuleList()
        for layer in decoder.layers:
            block = torch.nn.Module()
            for kind in ("self_attn", "cross_attn"):
                attn, view = getattr(layer, kind), torch.nn.Module()
                view.q_proj, view.k_proj, view.v_proj, view.o_proj = attn.to_q, attn.to_k, attn.to_v, attn.to_out[0]
                setattr(block, kind, view)
            self.layers.append(block)

    def put_back(self, decoder):
        """The (now wrapped) modules back into the diffusers decoder."""
        for layer, block in zip(decoder.layers, self.layers):
            for kind in ("self_attn", "cross_attn"):
                attn, view = getattr(layer, kind), getattr(block, kind)
                attn.to_q, attn.to_k, attn.to_v, attn.to_out[0] = view.q_proj, view.k_proj, view.v_proj, view.o_proj


def split_prefix(inputs: dict, prefix: str) -> dict:
    """The entries of a golden case's tensors under `prefix` ("decoder.", "encoder."), without it."""
    return {k[len(prefix):]: v for k, v in inputs.items() if k.startswith(prefix)}


def golden_decoder(dit, d: dict, encoder_hidden_states, timestep_r):
    """The decoder's output on a golden case's decoder inputs."""
    return dit.transformer(hidden_states=d["hidden_states"], timestep=d["timestep"], timestep_r=timestep_r,
                           encoder_hidden_states=encoder_hidden_states, context_latents=d["context_latents"]).sample


def decoder_inputs(seed: int = 0, T: int = 20, L: int = 7) -> dict:
    """Random inputs for the tiny 2B decoder (64 wide), one sample."""
    g = torch.Generator().manual_seed(seed)
    t = torch.tensor([0.6])
    return dict(hidden_states=torch.randn(1, T, 64, generator=g), timestep=t, timestep_r=t,
                encoder_hidden_states=torch.randn(1, L, 64, generator=g),
                context_latents=torch.randn(1, T, 128, generator=g))

"""Inference with a Side-Step adapter: diffusers' `AceStepPipeline` on components already loaded.

Two ways in, same numbers:

* `build_pipeline` + `generate_audio`: one `AceStepPipeline` holding the DiT, condition encoder,
  VAE and text encoder (`train.py generate`).
* The staged functions `encode_text` -> `encode_condition` -> `sample_latents` -> `decode_latents`
  (audio previews during training). They are the pipeline's own text2music steps taken apart,
  so that each large part can be loaded, used and freed on its own, and the conditioning (which
  no adapter touches: adapters wrap the decoder only, docs/design.md §6) can be computed once and kept.
  `tests/test_generate.py` checks that they reproduce `AceStepPipeline.__call__` exactly.

Sampler settings per variant (docs/design.md §7), the same for 2B and XL and read from the model's
config (`sampler_settings`): turbo 8 steps, shift 3, no CFG; base/sft 50 steps, shift 1, APG guidance
7.0 with the pipeline's parameters (momentum -0.75, norm threshold 2.5, time-axis normalisation, CFG
interval [0, 1]).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from sidestep.errors import SidestepError
from sidestep.io import atomic_path

INSTRUMENTAL = "[Instrumental]"
TIMBRE_SECONDS = 30  # the pipeline's timbre reference without reference audio: silence_latent[:, :30 s]


@dataclass(frozen=True)
class SamplerSettings:
    steps: int
    shift: float
    guidance: float  # 1.0 = no CFG


TURBO_SETTINGS = SamplerSettings(steps=8, shift=3.0, guidance=1.0)
BASE_SETTINGS = SamplerSettings(steps=50, shift=1.0, guidance=7.0)


def sampler_settings(model: Any, base_variant: str | None = None) -> SamplerSettings:
    """The variant's own settings. `model`: a ModelEntry, a TrainingModel, or `is_turbo` as a bool.

    Read from the model, never from its family or folder name: its base variant as discovery
    found it (config.json's `is_turbo` / `model_version` first), else its `is_turbo` flag. So
    xl-turbo gets turbo's 8 steps at shift 3 and xl-base / xl-sft get 50 steps with guidance 7.0,
    exactly as 2B (docs/design.md §7). `base_variant` (turbo/base/sft, or xl-turbo/xl-base/xl-sft)
    overrides what the model says (a fine-tune's `--base-model`).
    """
    variant = base_variant or getattr(model, "base_variant", None)
    if variant is not None and variant.startswith("xl-"):
        variant = variant[3:]
    if variant is None:
        entry = getattr(model, "entry", model)
        turbo = bool(entry) if isinstance(entry, bool) else bool(getattr(entry, "is_turbo", False))
    else:
        turbo = variant == "turbo"
    return TURBO_SETTINGS if turbo else BASE_SETTINGS


def make_scheduler():
    """As diffusers' AceStepPipeline docstring says: the pipeline computes the sigmas itself."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0)


def unwrap_decoder(decoder: torch.nn.Module) -> torch.nn.Module:
    """The diffusers transformer inside a Fabric / DDP wrapper (which add autocast and collectives)."""
    from diffusers import AceStepTransformer1DModel

    while not isinstance(decoder, AceStepTransformer1DModel) and isinstance(
            getattr(decoder, "module", None), torch.nn.Module):
        decoder = decoder.module
    return decoder


def build_pipeline(dit, vae, tokenizer, text_encoder, transformer: torch.nn.Module | None = None):
    """An `AceStepPipeline` on already-loaded parts (no copy of anything).

    `dit` is a `sidestep.model.loader.DiT` (its transformer and condition encoder are used);
    `transformer` replaces its transformer (e.g. a training decoder carrying an adapter).
    """
    from diffusers import AceStepPipeline

    pipeline = AceStepPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                               transformer=unwrap_decoder(transformer if transformer is not None else dit.transformer),
                               condition_encoder=dit.condition_encoder, scheduler=make_scheduler())
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _generator(seed: int) -> torch.Generator:
    # A CPU generator: the same seed gives the same noise on every device (diffusers' randn_tensor moves it).
    return torch.Generator("cpu").manual_seed(int(seed))


def _settings_for(is_turbo: bool, steps: int | None, shift: float | None, guidance: float | None) -> SamplerSettings:
    default = TURBO_SETTINGS if is_turbo else BASE_SETTINGS
    return SamplerSettings(steps=default.steps if steps is None else int(steps),
                           shift=default.shift if shift is None else float(shift),
                           guidance=default.guidance if guidance is None else float(guidance))


def generate_audio(pipeline, prompt: str, lyrics: str | None = None, duration: float = 30.0, seed: int = 42,
                   steps: int | None = None, shift: float | None = None, guidance: float | None = None,
                   bpm: int | None = None, keyscale: str | None = None, timesignature: str | None = None,
                   vocal_language: str = "en") -> tuple[torch.Tensor, int]:
    """One text2music clip: (waveform [channels, samples] float32 on the CPU, sample rate).

    Unset steps/shift/guidance take the pipeline's variant defaults (`pipeline.is_turbo`);
    the same seed gives the same audio.
    """
    settings = _settings_for(pipeline.is_turbo, steps, shift, guidance)
    audio = pipeline(prompt=prompt, lyrics=lyrics or INSTRUMENTAL, audio_duration=float(duration),
                     vocal_language=vocal_language, num_inference_steps=settings.steps,
                     guidance_scale=settings.guidance, shift=settings.shift, generator=_generator(seed),
                     bpm=bpm, keyscale=keyscale, timesignature=timesignature, output_type="pt").audios
    return audio[0].float().cpu(), pipeline.sample_rate


# -- the same, in stages ----------------------------------------------------------------------------


@dataclass
class TextEmbeddings:
    text_hidden_states: torch.Tensor
    text_attention_mask: torch.Tensor
    lyric_hidden_states: torch.Tensor
    lyric_attention_mask: torch.Tensor


@dataclass
class Conditioning:
    """Everything the decoder is conditioned on for one clip; independent of any decoder adapter."""

    encoder_hidden_states: torch.Tensor   # [1, L, D]
    encoder_attention_mask: torch.Tensor  # [1, L]
    null_hidden_states: torch.Tensor      # [1, L, D]: the learned null condition, for CFG
    context_latents: torch.Tensor         # [1, T, 2 * acoustic]: silence | ones (text2music)

    def to(self, device: torch.device | str) -> "Conditioning":
        return Conditioning(*(t.to(device) for t in (self.encoder_hidden_states, self.encoder_attention_mask,
                                                     self.null_hidden_states, self.context_latents)))


def latent_length(duration: float, latents_per_second: float = 25.0) -> int:
    """Latent frames for `duration` seconds, as the pipeline computes them."""
    return math.ceil(float(duration) * latents_per_second)


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def encode_text(tokenizer, text_encoder, prompt: str, lyrics: str | None, duration: float,
                bpm: int | None = None, keyscale: str | None = None, timesignature: str | None = None,
                vocal_language: str = "en") -> TextEmbeddings:
    """Prompt and lyrics through the text encoder with the pipeline's own templates (docs/design.md §5.7)."""
    from diffusers import AceStepPipeline

    text_only = AceStepPipeline(vae=None, text_encoder=text_encoder, tokenizer=tokenizer, transformer=None,
                                condition_encoder=None, scheduler=make_scheduler())
    return TextEmbeddings(*text_only.encode_prompt(
        prompt=prompt, lyrics=lyrics or INSTRUMENTAL, device=_device_of(text_encoder),
        vocal_language=vocal_language, audio_duration=float(duration),
        instruction=AceStepPipeline._get_task_instruction("text2music"), bpm=bpm, keyscale=keyscale,
        timesignature=timesignature))


@torch.no_grad()
def encode_condition(condition_encoder, text: TextEmbeddings, frames: int, dtype: torch.dtype,
                     latents_per_second: float = 25.0) -> Conditioning:
    """The condition encoder pass and the text2music context, as `AceStepPipeline.__call__` builds them.

    `dtype` is the decoder's (the pipeline builds silence/context in `transformer.dtype`).
    """
    device = _device_of(condition_encoder)
    silence = condition_encoder.silence_latent.to(device=device, dtype=dtype)
    if silence.shape[1] >= frames:
        source = silence[:, :frames, :]
    else:
        source = silence.repeat(1, -(-frames // silence.shape[1]), 1)[:, :frames, :]
    refer = silence[:, :math.ceil(TIMBRE_SECONDS * latents_per_second), :].contiguous()
    hidden, mask = condition_encoder(
        text_hidden_states=text.text_hidden_states, text_attention_mask=text.text_attention_mask,
        lyric_hidden_states=text.lyric_hidden_states, lyric_attention_mask=text.lyric_attention_mask,
        refer_audio_acoustic_hidden_states_packed=refer,
        refer_audio_order_mask=torch.arange(1, device=device, dtype=torch.long))
    null = condition_encoder.null_condition_emb.to(device=hidden.device, dtype=hidden.dtype).expand_as(hidden)
    context = torch.cat([source.contiguous(), torch.ones_like(source)], dim=-1)
    return Conditioning(encoder_hidden_states=hidden, encoder_attention_mask=mask,
                        null_hidden_states=null.clone(), context_latents=context)


def pipeline_is_turbo(transformer: torch.nn.Module) -> bool:
    """What `AceStepPipeline` decides from the transformer's config (turbo never runs CFG)."""
    config = unwrap_decoder(transformer).config
    return bool(getattr(config, "is_turbo", False) or getattr(config, "model_version", None) == "turbo")


def timestep_schedule(steps: int, shift: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """`AceStepPipeline._get_timestep_schedule`: linspace(1, 0, N + 1) warped by the shift, last dropped."""
    t = torch.linspace(1.0, 0.0, steps + 1, device=device, dtype=torch.float32)
    if shift != 1.0:
        t = shift * t / (1 + (shift - 1) * t)
    return t[:-1]


@torch.no_grad()
def sample_latents(transformer: torch.nn.Module, cond: Conditioning, seed: int, steps: int | None = None,
                   shift: float | None = None, guidance: float | None = None) -> torch.Tensor:
    """The pipeline's denoising loop (Euler flow ODE; APG when guidance > 1 on a non-turbo model).

    Returns the clean latents [1, T, acoustic].
    """
    from diffusers.guiders.adaptive_projected_guidance import MomentumBuffer, normalized_guidance
    from diffusers.utils.torch_utils import randn_tensor

    transformer = unwrap_decoder(transformer)
    turbo = pipeline_is_turbo(transformer)
    settings = _settings_for(turbo, steps, shift, guidance)
    guidance_scale = 1.0 if turbo else settings.guidance  # the pipeline ignores guidance for turbo
    device, dtype = cond.context_latents.device, transformer.dtype
    frames, channels = cond.context_latents.shape[1], transformer.config.audio_acoustic_hidden_dim
    xt = randn_tensor((1, frames, channels), generator=_generator(seed), device=device, dtype=dtype)
    context = cond.context_latents.to(dtype)
    scheduler = make_scheduler()
    scheduler.set_timesteps(sigmas=timestep_schedule(settings.steps, settings.shift, device).tolist(), device=device)
    do_cfg = guidance_scale > 1.0
    momentum = MomentumBuffer(momentum=-0.75) if do_cfg else None
    for t_sched in scheduler.timesteps:
        t = float(t_sched) * torch.ones((1,), device=device, dtype=dtype)
        if do_cfg:
            out = transformer(hidden_states=torch.cat([xt, xt]), timestep=torch.cat([t, t]),
                              timestep_r=torch.cat([t, t]),
                              encoder_hidden_states=torch.cat([cond.encoder_hidden_states, cond.null_hidden_states]),
                              context_latents=torch.cat([context, context]), return_dict=False)[0]
            v_cond, v_uncond = out.chunk(2, dim=0)
            v = normalized_guidance(pred_cond=v_cond, pred_uncond=v_uncond, guidance_scale=guidance_scale - 1.0,
                                    momentum_buffer=momentum, eta=0.0, norm_threshold=2.5,
                                    use_original_formulation=True, norm_dim=(1,))
        else:
            v = transformer(hidden_states=xt, timestep=t, timestep_r=t,
                            encoder_hidden_states=cond.encoder_hidden_states, context_latents=context,
                            return_dict=False)[0]
        xt = scheduler.step(v, t_sched, xt, return_dict=False)[0]
    return xt


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, window: int | None = None, overlap: int = 8) -> torch.Tensor:
    """VAE decode and the pipeline's loudness handling (anti-clip, then peak at -1 dBFS): [B, channels, samples].

    `window` (latent frames): decode longer latents in overlapping windows with the VAE's own tiled
    decode (`overlap` frames trimmed on each side), bounding the decode's memory at about
    window/T of a whole decode. With overlap 8 it matched a whole decode to ~5e-7 (the tiled
    decode's seams lie outside the decoder's receptive field; 4 frames were not enough).
    """
    z = latents.transpose(1, 2).to(vae.dtype)
    if window is not None and z.shape[-1] > window:
        if window <= 2 * overlap:
            raise ValueError(f"decode window {window} must exceed twice the overlap {overlap}")
        saved = (vae.use_tiling, vae.tile_latent_min_length, vae.tile_latent_overlap)
        vae.use_tiling, vae.tile_latent_min_length, vae.tile_latent_overlap = True, window, overlap
        try:
            audio = vae.decode(z).sample
        finally:
            vae.use_tiling, vae.tile_latent_min_length, vae.tile_latent_overlap = saved
    else:
        audio = vae.decode(z).sample
    audio = audio.float()
    peak = audio.abs().amax(dim=[1, 2], keepdim=True)
    if torch.any(peak > 1.0):
        audio = audio / peak.clamp(min=1.0)
    peak = audio.abs().amax(dim=[1, 2], keepdim=True).clamp(min=1e-6)
    return audio * (10.0 ** (-1.0 / 20.0) / peak)


# -- files and adapter strength -------------------------------------------------------------------


def write_wav(path: str | Path, waveform: torch.Tensor, sample_rate: int) -> Path:
    """[channels, samples] float -> 32-bit float WAV, written atomically (never half a file)."""
    import soundfile as sf

    path = Path(path)
    data = waveform.detach().float().cpu()
    if data.ndim == 1:
        data = data.unsqueeze(0)
    try:
        with atomic_path(path) as tmp:
            sf.write(str(tmp), data.T.contiguous().numpy(), int(sample_rate), format="WAV", subtype="FLOAT")
    except OSError as err:
        raise SidestepError(f"{path}: cannot write the audio file ({err.strerror or err}); choose a writable "
                            "path") from None
    return path


def _adapter_of(target: Any):
    from sidestep.adapters import attached

    adapter = attached(target)
    if adapter is None:
        raise SidestepError("no Side-Step adapter found on this decoder; nothing to scale")
    return adapter


def has_adapter(module: Any) -> bool:
    from sidestep.adapters import attached

    return attached(module) is not None


def set_adapter_strength(target: Any, strength: float) -> None:
    """Scale the adapter on a decoder: 1.0 = as trained, 0 = exactly the base model.

    `target`: a Side-Step adapter, or the decoder carrying one; its kind knows how it scales
    (`Adapter.set_strength`, sidestep/adapters/).
    """
    strength = float(strength)
    if not math.isfinite(strength):
        raise SidestepError(f"--strength {strength}: must be a finite number (1.0 = as trained, 0 = off)")
    _adapter_of(target).set_strength(strength)


@contextlib.contextmanager
def adapter_strength(target: Any, strength: float) -> Iterator[None]:
    """`set_adapter_strength` for the duration of a block; everything (scales, hooks, requires_grad) restored."""
    adapter = _adapter_of(target)
    grads = {p: p.requires_grad for p in adapter.decoder.parameters()}
    grads.update({p: p.requires_grad for p in adapter.parameters()})
    saved = adapter.strength_state()
    set_adapter_strength(adapter, strength)
    try:
        yield
    finally:
        adapter.restore_strength(saved)
        for param, flag in grads.items():
            param.requires_grad_(flag)

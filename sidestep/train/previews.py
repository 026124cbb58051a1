"""Audio previews during training: short clips from the training decoder and its adapter.

`PreviewSampler` renders fixed prompts with a fixed seed, so the clips of epoch 3 and epoch 9
differ only by what the adapter learned; `render("base", adapter_on=False)` is the model before
training. Files: `<output>/samples/{tag}_{k}.wav` (k = 1, 2, ...) and `samples/prompts.json`.

Memory: the decoder is the training decoder itself (no second copy). The conditioning of each
prompt goes through the text encoder and the condition encoder, which no adapter touches, so
it is computed once (`prepare`, staged: text encoder loaded, used and freed, then the condition
encoder) and kept as a few small tensors. Call `prepare()` before the DiT is loaded and the
encoders never share memory with the decoder. Every render then needs only the VAE for
decoding: with `offload=True` it is loaded for the decode and freed after, otherwise kept after
the first use.
`bench/preview_memory.py` measures it.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from sidestep.errors import SidestepError
from sidestep.memory import trim_heap
from sidestep.generate import (INSTRUMENTAL, Conditioning, SamplerSettings, has_adapter,
                               adapter_strength, decode_latents, encode_condition, encode_text, latent_length,
                               sample_latents, sampler_settings, unwrap_decoder, write_wav)
from sidestep.io import atomic_write_text

SAMPLES_DIR = "samples"
PROMPTS_FILE = "prompts.json"
DEFAULT_DURATION = 10.0
DEFAULT_NUM_PROMPTS = 2
# VAE decode in windows of 48 latent frames (1.9 s) overlapping by 8: a full decode of 10 s needs
# several times the memory of the DiT sampling (bench/preview_memory.py).
DECODE_WINDOW, DECODE_OVERLAP = 48, 8


@dataclass(frozen=True)
class PreviewPrompt:
    caption: str
    lyrics: str = INSTRUMENTAL
    bpm: int | None = None
    keyscale: str | None = None
    timesignature: str | None = None


@dataclass
class Preview:
    """One rendered clip: where it was written and the audio itself (for TensorBoard)."""

    path: Path
    waveform: torch.Tensor  # [channels, samples] float32, CPU
    sample_rate: int
    prompt: PreviewPrompt


def _int_or_none(value: Any) -> int | None:
    try:
        number = int(float(value))
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _str_or_none(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def dataset_prompts(dataset_dir: str | Path, count: int = DEFAULT_NUM_PROMPTS) -> list[PreviewPrompt]:
    """The first `count` samples' captions (with the dataset's trigger tag, as training saw them) and lyrics."""
    from sidestep.data.dataset import load_sample_metadata
    from sidestep.data.manifest import read_manifest
    from sidestep.data.prompts import apply_custom_tag, caption_from_filename, training_lyrics

    manifest = read_manifest(dataset_dir)
    position = manifest.tag_position
    prompts = []
    for path in manifest.files()[:count]:
        meta = load_sample_metadata(path)
        caption = meta.get("caption") or caption_from_filename(Path(meta.get("filename") or path.stem).stem)
        try:
            caption = apply_custom_tag(caption, meta.get("custom_tag") or None, position)
        except ValueError:
            caption = apply_custom_tag(caption, meta.get("custom_tag") or None)
        prompts.append(PreviewPrompt(caption=caption, lyrics=training_lyrics(meta.get("lyrics")),
                                     bpm=_int_or_none(meta.get("bpm")), keyscale=_str_or_none(meta.get("keyscale")),
                                     timesignature=_str_or_none(meta.get("timesignature"))))
    return prompts


def make_prompts(prompts: list[str] | list[PreviewPrompt] | None = None, lyrics: list[str] | None = None,
                 dataset_dir: str | Path | None = None, count: int = DEFAULT_NUM_PROMPTS) -> list[PreviewPrompt]:
    """`--sample-prompt` x `--sample-lyrics` (one lyrics for all, or one per prompt), else dataset captions."""
    if prompts:
        items = [p if isinstance(p, PreviewPrompt) else PreviewPrompt(caption=str(p)) for p in prompts]
    elif dataset_dir is not None:
        items = dataset_prompts(dataset_dir, count)
    else:
        items = []
    if not items:
        raise SidestepError("audio previews need a prompt: pass --sample-prompt, or a dataset with samples")
    lyrics = list(lyrics or [])
    if len(lyrics) not in (0, 1, len(items)):
        raise SidestepError(f"--sample-lyrics given {len(lyrics)} times for {len(items)} prompts; give it once "
                            "(used for every prompt) or once per prompt")
    if lyrics:
        lyrics = lyrics * len(items) if len(lyrics) == 1 else lyrics
        items = [PreviewPrompt(p.caption, lyr or INSTRUMENTAL, p.bpm, p.keyscale, p.timesignature)
                 for p, lyr in zip(items, lyrics)]
    return items


def free_memory(device: torch.device | None = None) -> None:
    """Collect garbage and return cached memory: the CUDA cache on GPUs, the C heap on CPUs."""
    gc.collect()
    if torch.cuda.is_available() and (device is None or device.type == "cuda"):
        torch.cuda.empty_cache()
    if device is None or device.type == "cpu":
        trim_heap()


def _vae_latents_per_second(vae_dir: Path) -> float:
    try:
        config = json.loads((Path(vae_dir) / "config.json").read_text(encoding="utf-8"))
        rate = float(config.get("sampling_rate", 48000)) / math.prod(config.get("downsampling_ratios", [1920]))
    except (OSError, ValueError, TypeError, AttributeError, RecursionError, OverflowError, ZeroDivisionError):
        return 25.0
    return rate if math.isfinite(rate) and rate > 0 else 25.0


@contextlib.contextmanager
def _keep_rng(device: torch.device) -> Iterator[None]:
    """Sampling must not move the global RNG (LoRA dropout, bit-identical resume)."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


class PreviewSampler:
    """Renders previews from the training decoder.

    parts: `discovery.locate_parts(root, variant)` (model entry, VAE, text encoder, silence latent).
    decoder: the training decoder carrying its adapter (a Fabric/DDP wrapper is unwrapped). May be
    None until the first render (set `sampler.decoder`): then pass device and dtype, and call
    `prepare()` before the DiT is loaded, the lowest-memory order:

        sampler = PreviewSampler(parts, None, out, dataset_dir=d, device=dev, dtype=dt)
        sampler.prepare()              # text encoder, then condition encoder; both freed
        ... load the decoder, build the adapter ...
        sampler.decoder = decoder
        sampler.render("base", adapter_on=False); ...; sampler.render(f"epoch_{n}")

    output_dir: files go to `<output_dir>/samples/`.
    prompts / lyrics: `--sample-prompt` / `--sample-lyrics` (repeatable); by default the first
    `num_prompts` dataset captions of `dataset_dir`.
    seed, duration: fixed for the run, so previews compare across epochs.
    offload: load the VAE only while decoding (else keep it after the first use).
    base_variant: turbo/base/sft when the model entry cannot tell (`--base-model`);
    steps/shift/guidance override the variant's sampler settings.
    device/dtype: default to the decoder's.
    decode_window: VAE decode in windows of this many latent frames (None = all at once).
    """

    def __init__(self, parts, decoder: torch.nn.Module | None, output_dir: str | Path,
                 prompts: list[str] | list[PreviewPrompt] | None = None, *, lyrics: list[str] | None = None,
                 dataset_dir: str | Path | None = None, num_prompts: int = DEFAULT_NUM_PROMPTS, seed: int = 42,
                 duration: float = DEFAULT_DURATION, offload: bool = True, base_variant: str | None = None,
                 steps: int | None = None, shift: float | None = None, guidance: float | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 decode_window: int | None = DECODE_WINDOW):
        if not duration > 0:
            raise SidestepError(f"preview duration {duration}: must be positive (seconds)")
        self.parts = parts
        self.decoder = decoder
        self.samples_dir = Path(output_dir) / SAMPLES_DIR
        self.prompts = make_prompts(prompts, lyrics, dataset_dir, num_prompts)
        self.seed, self.duration, self.offload = int(seed), float(duration), offload
        default = sampler_settings(parts.model, base_variant)
        self.settings = SamplerSettings(steps=default.steps if steps is None else int(steps),
                                        shift=default.shift if shift is None else float(shift),
                                        guidance=default.guidance if guidance is None else float(guidance))
        if decoder is None and (device is None or dtype is None):
            raise ValueError("PreviewSampler without a decoder needs device and dtype")
        module = unwrap_decoder(decoder) if decoder is not None else None
        self.device = torch.device(device) if device is not None else next(module.parameters()).device
        self.dtype = dtype or module.dtype
        self.latents_per_second = _vae_latents_per_second(parts.vae)
        self.frames = latent_length(self.duration, self.latents_per_second)
        self.decode_window = decode_window
        self._conditions: list[Conditioning] | None = None
        self._vae = None

    # -- stages ---------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Compute and keep every prompt's conditioning (text encoder, then condition encoder; each freed)."""
        if self._conditions is not None:
            return
        from sidestep.model.loader import load_model_dit, load_text_encoder

        with _keep_rng(self.device):
            tokenizer, text_encoder = load_text_encoder(self.parts.text_encoder, self.device, self.dtype)
            texts = [encode_text(tokenizer, text_encoder, p.caption, p.lyrics, self.duration, p.bpm, p.keyscale,
                                 p.timesignature) for p in self.prompts]
            del tokenizer, text_encoder
            free_memory(self.device)
            dit = load_model_dit(self.parts.model, self.device, self.dtype,
                                 silence_latent=self.parts.silence_latent, with_transformer=False)
            encoder = dit.condition_encoder
            self._conditions = [encode_condition(encoder, t, self.frames, self.dtype, self.latents_per_second)
                                for t in texts]
            del encoder, dit, texts
            free_memory(self.device)
        self._write_prompts()

    def _write_prompts(self) -> None:
        entries = [dict(k=k, **asdict(p)) for k, p in enumerate(self.prompts, 1)]
        atomic_write_text(self.samples_dir / PROMPTS_FILE, json.dumps(
            {"seed": self.seed, "duration": self.duration, "model": self.parts.model.name,
             "sampler": asdict(self.settings), "prompts": entries}, indent=2))

    def _get_vae(self):
        if self._vae is None:
            from sidestep.model.loader import load_vae

            self._vae = load_vae(self.parts.vae, self.device, self.dtype)
        return self._vae

    def release(self) -> None:
        """Free the VAE (kept when offload=False); the conditioning stays (a few small tensors)."""
        self._vae = None
        free_memory(self.device)

    # -- rendering ------------------------------------------------------------------------------------

    def render(self, tag: str, adapter_on: bool = True) -> list[Preview]:
        """Write `samples/{tag}_{k}.wav` for every prompt; returns them with their audio.

        `adapter_on=False` renders the base model (adapter at strength 0) and restores it after.
        The decoder is sampled in eval mode under no_grad; its train/eval modes, adapter scales and
        requires_grad flags, and the global RNG state are as before when this returns.
        """
        if not re.fullmatch(r"[\w.-]+", tag):
            raise ValueError(f"preview tag {tag!r}: use letters, digits, '_', '-' or '.'")
        if self.decoder is None:
            raise ValueError("PreviewSampler.render: set sampler.decoder (the training decoder) first")
        self.prepare()
        free_memory(self.device)  # what the last training step freed, before sampling allocates
        module = unwrap_decoder(self.decoder)
        adapter_here = has_adapter(module)
        modes = {m: m.training for m in module.modules()}
        latents = []
        try:
            module.eval()
            strength = adapter_strength(module, 0.0) if not adapter_on and adapter_here else contextlib.nullcontext()
            with _keep_rng(self.device), torch.no_grad(), strength:
                for cond in self._conditions:
                    latents.append(sample_latents(module, cond, self.seed, self.settings.steps, self.settings.shift,
                                                  self.settings.guidance))
        finally:
            for m, training in modes.items():
                m.training = training
        previews = []
        with _keep_rng(self.device), torch.no_grad():
            vae = self._get_vae()
            rate = int(vae.config.sampling_rate)
            for k, (lat, prompt) in enumerate(zip(latents, self.prompts), 1):
                waveform = decode_latents(vae, lat, self.decode_window, DECODE_OVERLAP)[0].float().cpu()
                path = write_wav(self.samples_dir / f"{tag}_{k}.wav", waveform, rate)
                previews.append(Preview(path=path, waveform=waveform, sample_rate=rate, prompt=prompt))
            del vae
        if self.offload:
            self.release()
        return previews


def log_previews(writer, previews: list[Preview], step: int, tag: str = "preview") -> None:
    """Each preview to TensorBoard as `{tag}/{k}` (mono mix: TensorBoard plays one channel)."""
    for k, preview in enumerate(previews, 1):
        writer.add_audio(f"{tag}/{k}", preview.waveform.mean(dim=0).clamp(-1, 1), step,
                         sample_rate=preview.sample_rate)


__all__ = ["PreviewSampler", "Preview", "PreviewPrompt", "dataset_prompts", "make_prompts", "log_previews",
           "SAMPLES_DIR", "PROMPTS_FILE"]

"""Does an audio preview raise the training peak? Peak RSS around training steps and a preview, one process.

    OMP_NUM_THREADS=1 uv run python bench/preview_memory.py                # prepare first (recommended order)
    OMP_NUM_THREADS=1 uv run python bench/preview_memory.py --late-prepare # encoders loaded after training
    OMP_NUM_THREADS=1 uv run python bench/preview_memory.py --full-vae     # the released VAE's size

A checkpoints root is written first in a child process (so its memory never counts here): the
DiT at the medium config (`reference/medium-config.json`, random weights, official
layout), the tiny test VAE (2.9 M parameters; `--full-vae`: the released size, 168.7 M) and
a tiny 2-layer Qwen3 text encoder at the medium config's text width (1024). Then, in this
process, as training does: the PreviewSampler computes the prompt conditioning (text encoder,
then condition encoder, each loaded and freed), the decoder is loaded without its condition
encoder, a LoRA (r=64) is built, N AdamW steps of the fixed-mode loss run on a 30 s batch
with gradient checkpointing, and then a 10 s preview is rendered with offload (VAE loaded for
the decode, freed after) plus the adapter-off base preview. Peak RSS (ru_maxrss) is read after each phase, and the previews'
own high-water mark (VmHWM, reset through /proc/self/clear_refs after the heap trim every render
starts with); one JSON line.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _common import MEDIUM_CONFIG, current_rss_gib, emit, peak_rss_gib, phase_peak_gib, reset_peak


# The released Oobleck VAE's shape (168.7 M parameters), as bench/preprocess_memory.py.
FULL_VAE = dict(encoder_hidden_size=128, downsampling_ratios=[2, 4, 4, 6, 10], channel_multiples=[1, 2, 4, 8, 16],
                decoder_channels=128, decoder_input_channels=64, audio_channels=2, sampling_rate=48000)


def write_root(root: Path, full_vae: bool) -> None:
    from sidestep.model.configs import load_config_file
    from sidestep.model.tiny import TEXT_ENCODER_DIR, VAE_DIR, write_dit_folder, write_text_encoder_folder, \
        write_vae_folder

    config = load_config_file(MEDIUM_CONFIG)
    if full_vae:
        from diffusers import AutoencoderOobleck

        torch.manual_seed(0)
        AutoencoderOobleck(**FULL_VAE).save_pretrained(root / VAE_DIR)
    else:
        write_vae_folder(root / VAE_DIR)
    write_dit_folder(root / "acestep-v15-turbo", config)
    write_text_encoder_folder(root / TEXT_ENCODER_DIR, config["text_hidden_dim"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3, help="training steps before the preview")
    p.add_argument("--frames", type=int, default=750, help="latent frames per training sample (25 per second)")
    p.add_argument("--cond", type=int, default=769, help="condition tokens per training sample (docs/design.md §5.5)")
    p.add_argument("--duration", type=float, default=10.0, help="preview seconds")
    p.add_argument("--late-prepare", action="store_true", help="compute the conditioning after training "
                   "(at the first render) instead of before the decoder is loaded")
    p.add_argument("--root", help="where the checkpoints root goes (reused when it exists; default: a temp dir)")
    p.add_argument("--full-vae", action="store_true", help="the released VAE's size (168.7 M, random weights) "
                   "instead of the tiny test VAE")
    p.add_argument("--write-root", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.write_root:
        write_root(Path(args.write_root), args.full_vae)
        return

    from sidestep.config import Config
    from sidestep.model.discovery import locate_parts
    from sidestep.model.loader import load_model_dit
    from sidestep.adapters import build_adapter
    from sidestep.train.objective import Objective, flow_matching_loss, sample_generators
    from sidestep.train.previews import PreviewSampler, free_memory

    tmp = tempfile.TemporaryDirectory(prefix="preview_memory_")
    root = Path(args.root) if args.root else Path(tmp.name) / "checkpoints"
    if not root.exists():
        extra = ["--full-vae"] if args.full_vae else []
        subprocess.run([sys.executable, __file__, "--write-root", str(root), *extra], check=True)
    parts = locate_parts(root, "turbo")
    peaks: dict[str, float] = {"start": peak_rss_gib()}

    sampler = PreviewSampler(parts, None, Path(tmp.name) / "out", ["melodic techno, warm pads, 124 bpm"],
                             lyrics=["[Instrumental]"], seed=0, duration=args.duration, offload=True,
                             device="cpu", dtype=torch.float32)
    if not args.late_prepare:
        sampler.prepare()
        peaks["after_prepare"] = peak_rss_gib()

    # As sidestep/train/recipe.py: the decoder alone, a LoRA, AdamW, gradient checkpointing.
    dit = load_model_dit(parts.model, with_condition_encoder=False)
    decoder, null = dit.transformer, dit.null_condition_emb.detach().clone()
    del dit
    config = Config(rank=64, alpha=128, dropout=0.0)
    adapter = build_adapter(config, decoder)
    decoder.enable_gradient_checkpointing()
    decoder.train()
    peaks["after_load"] = peak_rss_gib()
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=1e-4)
    objective = Objective("fixed")
    g = torch.Generator().manual_seed(0)
    hidden = decoder.config.hidden_size
    batch = {"target_latents": torch.randn(1, args.frames, 64, generator=g),
             "encoder_hidden_states": torch.randn(1, args.cond, hidden, generator=g),
             "context_latents": torch.randn(1, args.frames, 128, generator=g)}
    started = time.perf_counter()
    for step in range(args.steps):
        loss, _ = flow_matching_loss(decoder, batch, objective, sample_generators(0, step, [0]), null,
                                     input_requires_grad=True)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    step_s = (time.perf_counter() - started) / max(args.steps, 1)
    peaks["after_training"] = peak_rss_gib()
    rss_before_preview = current_rss_gib()

    sampler.decoder = decoder
    free_memory(torch.device("cpu"))  # render() starts with this too; here so the phase peak starts from it
    rss_trimmed = current_rss_gib()
    phase = reset_peak()
    started = time.perf_counter()
    base = sampler.render("base", adapter_on=False)
    preview = sampler.render("epoch_1")
    preview_s = (time.perf_counter() - started) / 2
    # clear_refs resets ru_maxrss too: the previews' peak is read on its own and compared
    peaks["previews"] = phase_peak_gib() if phase else peak_rss_gib()
    assert preview[0].waveform.shape[-1] == round(args.duration * 25) * 1920 and base
    emit(dict(bench="preview_memory", config="medium", order="late_prepare" if args.late_prepare else "prepare_first",
              train_frames=args.frames, train_steps=args.steps, preview_seconds=args.duration,
              vae="released size (168.7M params)" if args.full_vae else "tiny (2.9M params)",
              text_encoder="tiny Qwen3, 2 layers, width 1024",
              decoder_params=sum(p.numel() for p in decoder.parameters()),
              peak_rss_gib={k: round(v, 3) for k, v in peaks.items()},
              training_peak_gib=round(peaks["after_training"], 3), preview_peak_gib=round(peaks["previews"], 3),
              preview_raised_peak=peaks["previews"] > peaks["after_training"],
              rss_before_preview_gib=round(rss_before_preview, 3), rss_trimmed_gib=round(rss_trimmed, 3),
              rss_after_preview_gib=round(current_rss_gib(), 3),
              train_step_s=round(step_s, 2), preview_s=round(preview_s, 2)))
    tmp.cleanup()


if __name__ == "__main__":
    main()

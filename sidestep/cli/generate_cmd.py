"""`train.py generate`: a song from a prompt, with or without a Side-Step adapter."""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

from sidestep.console import get_console
from sidestep.config import Config
from sidestep.errors import SidestepError

MAX_DURATION = 600.0  # the released silence latent covers 600 s


def generate_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Generation")
    group.add_argument("--prompt", dest="gen_prompt", metavar="TEXT", help="Caption: style, genre, instruments "
                       "(include your adapter's trigger word)")
    group.add_argument("--lyrics", dest="gen_lyrics", metavar="TEXT", default=None,
                       help="Lyrics with [Verse]/[Chorus] tags (default: [Instrumental])")
    group.add_argument("--duration", dest="gen_duration", metavar="SECONDS", type=float, default=30.0,
                       help="Length in seconds (default: 30)")
    group.add_argument("--adapter", dest="gen_adapter", metavar="DIR", default=None,
                       help="Adapter folder (an output dir or checkpoints/epoch_N) or file (ACE-Step PEFT, "
                       "diffusers or ComfyUI layout); none = base model")
    group.add_argument("--strength", dest="gen_strength", metavar="S", type=float, default=1.0,
                       help="Adapter strength: 1.0 = as trained, 0 = off (default: 1.0)")
    group.add_argument("--out", dest="gen_out", metavar="FILE.wav", default=None, help="WAV file to write")
    group.add_argument("--steps", dest="gen_steps", metavar="N", type=int, default=None,
                       help="Sampling steps (default: turbo 8, base/sft 50)")
    group.add_argument("--sampler-shift", dest="gen_shift", metavar="SHIFT", type=float, default=None,
                       help="Timestep shift (default: turbo 3.0, base/sft 1.0)")
    group.add_argument("--guidance", dest="gen_guidance", metavar="G", type=float, default=None,
                       help="CFG guidance for base/sft (default: 7.0; turbo never uses CFG)")


def out_problem(out: str) -> str | None:
    """Why a song cannot be written to `out`, else None (one rule for the CLI and the wizard)."""
    path = Path(out).expanduser()
    if path.is_dir():
        return f"{path}: is a folder; give a file name such as {path / 'song.wav'}"
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return f"{path}: cannot write there ({existing} is not a writable folder); choose another path"
    return None


def prompt_problem(prompt: str) -> str | None:
    return None if prompt and prompt.strip() else "a caption is needed: style, genre, instruments"


def duration_problem(duration: float) -> str | None:
    if math.isfinite(duration) and 0 < duration <= MAX_DURATION:
        return None
    return f"{duration:g}: must be more than 0 and at most {MAX_DURATION:g} seconds"


def adapter_problem(adapter: str) -> str | None:
    from sidestep.adapters import KINDS, expected_files

    folder = Path(adapter).expanduser()
    if not folder.exists():
        return (f"{folder}: folder not found; pass a Side-Step output folder, checkpoints/epoch_N or an adapter file "
                "(ACE-Step PEFT, diffusers, ComfyUI)")
    if folder.is_dir() and not any(k.owns(folder) for k in KINDS.values()) and not any(folder.glob("*.safetensors")):
        return f"{folder}: no adapter here (expected {expected_files()})"
    return None


def _check_out(out: str | None, config: Config, adapter: str | None) -> Path:
    from sidestep.guards import check_output_file

    if not out:
        raise SidestepError("generate: pass --out FILE.wav (where the song is written)")
    problem = out_problem(out)
    if problem:
        raise SidestepError(f"--out {problem}")
    path = Path(out).expanduser()
    folder = Path(adapter).expanduser() if adapter else None  # a file or a folder of adapter files
    adapter_files = [("--adapter", p) for p in ([folder] if folder.is_file() else folder.glob("*"))] \
        if folder is not None and folder.exists() else []
    check_output_file(path, "--out", adapter_files, [("--checkpoint-dir", config.checkpoint_dir)])
    return path


def _check(config: Config, args: argparse.Namespace) -> Path:
    if not config.checkpoint_dir:
        raise SidestepError("generate: pass --checkpoint-dir (the folder holding acestep-v15-turbo/, vae/, ...)")
    if prompt_problem(args.gen_prompt):
        raise SidestepError("generate: pass --prompt \"...\" (a caption: style, genre, instruments)")
    problem = duration_problem(args.gen_duration)
    if problem:
        raise SidestepError(f"--duration {problem}")
    if not math.isfinite(args.gen_strength):
        raise SidestepError(f"--strength {args.gen_strength}: must be a number (1.0 = as trained, 0 = off)")
    if args.gen_steps is not None and args.gen_steps < 1:
        raise SidestepError(f"--steps {args.gen_steps}: must be at least 1")
    if args.gen_shift is not None and not args.gen_shift > 0:
        raise SidestepError(f"--sampler-shift {args.gen_shift}: must be positive")
    if args.gen_guidance is not None and not args.gen_guidance >= 0:
        raise SidestepError(f"--guidance {args.gen_guidance}: must be 0 or more (1.0 = no CFG)")
    if args.gen_adapter is None and args.gen_strength != 1.0:
        raise SidestepError(f"--strength {args.gen_strength:g} needs --adapter DIR (without one the base model plays)")
    if args.gen_adapter is not None:
        problem = adapter_problem(args.gen_adapter)
        if problem:
            raise SidestepError(f"--adapter {problem}")
    return _check_out(args.gen_out, config, args.gen_adapter)


def trigger_tag(folder: Path) -> str | None:
    """The trigger tag the adapter was trained with (sidestep_run.json), if any."""
    import json

    try:
        trigger = json.loads((folder / "sidestep_run.json").read_text(encoding="utf-8"))["inference"]["trigger"]
    except (OSError, ValueError, RecursionError, KeyError, TypeError):
        return None
    return trigger if isinstance(trigger, str) and trigger.strip() else None


def _load_adapter(load, decoder, folder: Path):
    """The adapter in `folder`, or one line saying why it does not fit this model (never a size-mismatch dump)."""
    from safetensors import SafetensorError

    try:
        return load(decoder, folder)
    except SidestepError:
        raise
    except RuntimeError as err:  # load_state_dict: "size mismatch for ...: copying a param with shape ..."
        lines = [l.strip() for l in str(err).splitlines() if "size mismatch" in l or "Missing key" in l
                 or "Unexpected key" in l]
        detail = (lines[0] if lines else str(err).splitlines()[0] if str(err) else type(err).__name__)[:240]
        raise SidestepError(f"--adapter {folder}: does not fit this model ({detail}); it was trained on a model of "
                            "another size or kind: pick that model with --model-variant") from None
    except (OSError, ValueError, RecursionError, KeyError, TypeError, AttributeError, SafetensorError) as err:
        detail = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else 'no detail'}"
        raise SidestepError(f"--adapter {folder}: cannot read the adapter ({detail}); it is damaged or not a "
                            "Side-Step adapter: export it again from its training folder") from None


def run_generate(config: Config, args: argparse.Namespace) -> int:
    out = _check(config, args)
    console = get_console()
    # importing torch and loading three models take seconds: say so before the silence
    console.print(f"Loading the model ({config.model_variant} from {config.checkpoint_dir}) ...", highlight=False,
                  soft_wrap=True)
    from sidestep.generate import build_pipeline, generate_audio, sampler_settings, set_adapter_strength, write_wav
    from sidestep.model.discovery import locate_parts
    from sidestep.model.loader import load_model_dit, load_text_encoder, load_vae
    from sidestep.runtime import resolve_runtime

    runtime = resolve_runtime(config.device, config.precision)
    parts = locate_parts(config.checkpoint_dir, config.model_variant)
    settings = sampler_settings(parts.model)
    steps = args.gen_steps or settings.steps
    shift = args.gen_shift if args.gen_shift is not None else settings.shift
    guidance = args.gen_guidance if args.gen_guidance is not None else settings.guidance

    started = time.perf_counter()
    dtype, device = runtime.compute_dtype, runtime.device
    dit = load_model_dit(parts.model, device=device, dtype=dtype, silence_latent=parts.silence_latent)
    adapter_note = "base model"
    if args.gen_adapter is not None:
        from sidestep.adapters import load_adapter

        adapter = _load_adapter(load_adapter, dit.transformer, Path(args.gen_adapter).expanduser())
        dit.transformer.requires_grad_(False)
        set_adapter_strength(adapter, args.gen_strength)
        adapter_note = f"{adapter.label} adapter {args.gen_adapter} at strength {args.gen_strength:g}"
        trigger = trigger_tag(Path(args.gen_adapter).expanduser())
        if trigger and trigger.lower() not in args.gen_prompt.lower():
            console.print(f"note: this adapter was trained with the trigger tag '{trigger}'; put it in --prompt "
                          "to call up what it learned", markup=False, highlight=False)
    dit.transformer.eval()
    vae = load_vae(parts.vae, device=device, dtype=dtype)
    tokenizer, text_encoder = load_text_encoder(parts.text_encoder, device=device, dtype=dtype)
    pipeline = build_pipeline(dit, vae, tokenizer, text_encoder)
    console.print(f"Generating {args.gen_duration:g} s with {parts.model.name} ({adapter_note}), {steps} steps, "
                  f"shift {shift:g}, guidance {guidance:g}, seed {config.seed} on {device}...", highlight=False)
    waveform, rate = generate_audio(pipeline, args.gen_prompt, args.gen_lyrics, args.gen_duration, config.seed,
                                    steps=steps, shift=shift, guidance=guidance)
    path = write_wav(out, waveform, rate)
    console.print(f"Wrote {path} ({waveform.shape[-1] / rate:.2f} s, {rate} Hz, {waveform.shape[0]} channels) "
                  f"in {time.perf_counter() - started:.1f} s", highlight=False)
    return 0

"""`train.py demo`: the whole product on an embedded tiny checkpoint, no downloads needed.

tiny checkpoint root (official layout) -> six synthesized songs + a dataset JSON -> two-pass
preprocessing -> corrected (fixed) LoRA training with a checkpoint -> a short LoKR run ->
where the adapter files are and how to use them. About a minute on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from sidestep.console import get_console
from sidestep.cli.models_cmd import models_table, parts_lines
from sidestep.config import Config
from sidestep.io import atomic_write_text
from sidestep.model.tiny import write_tiny_checkpoint_root

SONGS = [  # (file, caption, bpm, key, root note Hz, lyrics)
    ("sunrise_drone.wav", "warm ambient drone, slow synth pads", 70, "C major", 130.8, "[Instrumental]"),
    ("night_pulse.wav", "dark electronic pulse, deep bass", 120, "A minor", 110.0, "[Instrumental]"),
    ("bright_bells.wav", "bright bell arpeggio, airy", 96, "G major", 196.0, "[Verse]\nla la la"),
    ("low_hum.wav", "low hum with soft noise, lo-fi", 80, "D minor", 73.4, "[Instrumental]"),
    ("square_lead.wav", "chiptune square lead, energetic", 140, "E minor", 164.8, "[Chorus]\noh yeah"),
    ("noise_wash.wav", "filtered noise wash, calm", 60, "F major", 87.3, "[Instrumental]"),
]
SAMPLE_RATE = 48000
SECONDS = 3.0


def synthesize_song(path: Path, root_hz: float, bpm: int, seed: int) -> None:
    """A short stereo chord with a beat-synchronous envelope and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SAMPLE_RATE * SECONDS)) / SAMPLE_RATE
    chord = sum(np.sin(2 * np.pi * root_hz * ratio * t + rng.uniform(0, 6.28)) for ratio in (1.0, 1.25, 1.5))
    beat = 0.6 + 0.4 * np.cos(2 * np.pi * (bpm / 60.0) * t) ** 2
    mono = 0.25 * chord * beat / 3 + 0.02 * rng.standard_normal(t.size)
    stereo = np.stack([mono, np.roll(mono, 240)], axis=1).astype(np.float32)
    sf.write(path, stereo, SAMPLE_RATE)


def write_songs(folder: Path) -> Path:
    """Six songs and the dataset JSON that describes them."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for i, (name, caption, bpm, key, root, lyrics) in enumerate(SONGS):
        if not (folder / name).is_file():
            synthesize_song(folder / name, root, bpm, seed=i)
        samples.append(dict(filename=name, caption=caption, bpm=bpm, keyscale=key, timesignature="4",
                            lyrics=lyrics, is_instrumental=lyrics == "[Instrumental]"))
    dataset_json = folder / "dataset.json"
    atomic_write_text(dataset_json, json.dumps({"metadata": {"custom_tag": "sidestep-demo",
                                                             "tag_position": "prepend"}, "samples": samples}, indent=2))
    return dataset_json


def ensure_demo_checkpoints(demo_dir: Path) -> Path:
    root = demo_dir / "checkpoints"
    marker = root / ".complete"
    if not marker.is_file():
        get_console().print(f"Writing a tiny random checkpoint root (official layout) to {root} ...")
        write_tiny_checkpoint_root(root)
        marker.write_text("ok\n")
    return root


def run_demo(config: Config, args: argparse.Namespace) -> int:
    from sidestep.cli.train_cmd import print_result
    from sidestep.data.preprocess import preprocess_dataset
    from sidestep.train.recipe import train

    console = get_console()
    started = time.perf_counter()
    demo_dir = Path(config.demo_dir)
    root = ensure_demo_checkpoints(demo_dir)
    console.print(models_table(str(root)))
    for line in parts_lines(str(root)):
        console.print(line)

    console.rule("1/3 Preprocess: six synthesized songs -> training tensors")
    dataset_json = write_songs(demo_dir / "songs")
    base = Config(checkpoint_dir=str(root), model_variant="turbo", num_workers=0, seed=config.seed)
    report = preprocess_dataset(base.replace(audio_dir=str(demo_dir / "songs"), dataset_json=str(dataset_json),
                                             tensor_output=str(demo_dir / "tensors")))

    console.rule("2/3 Corrected (fixed) LoRA training")
    lora = base.replace(dataset_dir=str(report.output_dir), output_dir=str(demo_dir / "output" / "lora"),
                        epochs=4, save_every=2, rank=8, alpha=16, learning_rate=1e-3, warmup_steps=2,
                        gradient_accumulation=2)
    print_result(train(lora, "fixed"), lora)

    console.rule("3/3 Short LoKR run")
    lokr = lora.replace(adapter_type="lokr", output_dir=str(demo_dir / "output" / "lokr"), epochs=2, save_every=2,
                        lokr_linear_dim=8, lokr_linear_alpha=16)
    print_result(train(lokr, "fixed"), lokr)
    console.print(f"Demo finished in {time.perf_counter() - started:.0f} s. On real checkpoints the same steps are:\n"
                  "  train.py preprocess --checkpoint-dir CKPT --audio-dir SONGS --tensor-output TENSORS\n"
                  "  train.py fixed --checkpoint-dir CKPT --dataset-dir TENSORS --output-dir OUT\n"
                  f"  train.py export --format comfyui {lora.output_dir} lora_comfyui.safetensors", highlight=False)
    return 0

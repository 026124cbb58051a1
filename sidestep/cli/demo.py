"""`train.py demo`: the whole product on an embedded tiny checkpoint, no downloads needed."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from sidestep.cli.console import get_console
from sidestep.cli.models_cmd import models_table, parts_lines
from sidestep.config import Config
from sidestep.model import discovery
from sidestep.model.loader import load_model_dit
from sidestep.model.tiny import write_tiny_checkpoint_root


def ensure_demo_checkpoints(demo_dir: Path) -> Path:
    root = demo_dir / "checkpoints"
    marker = root / ".complete"
    if not marker.is_file():
        get_console().print(f"Writing a tiny random checkpoint root (official layout) to {root} ...")
        write_tiny_checkpoint_root(root)
        marker.write_text("ok\n")
    return root


def run_demo(config: Config, args: argparse.Namespace) -> int:
    console = get_console()
    demo_dir = Path(config.demo_dir)
    root = ensure_demo_checkpoints(demo_dir)
    console.print(models_table(str(root)))
    for line in parts_lines(str(root)):
        console.print(line)

    entry = discovery.find_model(root, "turbo")
    dit = load_model_dit(entry)
    T, L = 50, 20  # 2 s of latents, 20 condition tokens
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(1, T, dit.config["audio_acoustic_hidden_dim"], generator=g)
    enc = torch.randn(1, L, dit.config["hidden_size"], generator=g)
    context = torch.cat([dit.silence_latent()[:, :T], torch.ones_like(x_t)], dim=-1)
    t = torch.tensor([0.5])
    start = time.perf_counter()
    with torch.no_grad():
        v = dit.transformer(hidden_states=x_t, timestep=t, timestep_r=t, encoder_hidden_states=enc,
                            context_latents=context).sample
    console.print(f"Decoder forward: input {list(x_t.shape)} -> velocity {list(v.shape)} "
                  f"in {time.perf_counter() - start:.3f} s (|v| mean {v.abs().mean():.4f})")
    return 0

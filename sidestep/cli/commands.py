"""The commands of `train.py`: one registry that the CLI parser and the wizard both run."""

from __future__ import annotations

from sidestep.cli.parser import Command


def commands() -> list[Command]:
    from sidestep.cli.dataset_cmd import run_dataset
    from sidestep.cli.demo import run_demo
    from sidestep.cli.estimate_cmd import compare_arguments, run_compare, run_estimate, run_selective
    from sidestep.cli.export_cmd import export_arguments, run_export
    from sidestep.cli.generate_cmd import generate_arguments, run_generate
    from sidestep.cli.models_cmd import run_models
    from sidestep.cli.preprocess_cmd import run_preprocess
    from sidestep.cli.train_cmd import run_training

    return [
        Command("demo", "End to end on a tiny built-in checkpoint (no downloads)", run_demo),
        Command("models", "List the models found under --checkpoint-dir", run_models),
        Command("dataset", "Write the dataset JSON for a folder of songs (tags, BPM, key, lyrics); --review, "
                "--set, --show-prompt", run_dataset),
        Command("preprocess", "Turn a folder of songs (+ optional dataset JSON) into training tensors",
                run_preprocess),
        Command("fixed", "Corrected training: CFG dropout + the model's own timestep sampling (recommended)",
                run_training("fixed")),
        Command("vanilla", "Upstream ACE-Step trainer behaviour: discrete turbo timesteps, no CFG dropout",
                run_training("vanilla")),
        Command("estimate", "Rank the decoder's attention modules by gradient sensitivity on your data", run_estimate),
        Command("selective", "Corrected training on the top-k modules of a module config (from estimate)",
                run_selective),
        Command("compare-configs", "Compare module configs: overlap, Jaccard, rank correlation, per layer",
                run_compare, compare_arguments),
        Command("export", "Convert an adapter folder for another client (ComfyUI)", run_export, export_arguments),
        Command("generate", "Make a song from a prompt, with or without an adapter", run_generate,
                generate_arguments),
    ]

"""The one configuration dataclass. The CLI (and the wizard) are generated from it.

Each field carries its flag, help, group and the subcommands it belongs to in its metadata,
so an option is declared exactly once. Defaults follow the Side-Step 0.8 argument reference.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from sidestep.errors import SidestepError

TRAIN = ("fixed", "vanilla", "selective")
PREPROCESS = ("preprocess",)
ESTIMATE = ("estimate",)
MODEL_CMDS = TRAIN + PREPROCESS + ESTIMATE


def opt(default: Any, group: str, help: str, commands: tuple[str, ...] = TRAIN, flags: tuple[str, ...] = (),
        choices: tuple | None = None, nargs: str | None = None, basic: bool = False, bounds: str | None = None,
        check: Callable[[Any], str | None] | None = None) -> Any:
    """A config field. `flags` defaults to `--field-name`; `basic` marks wizard basic-mode questions;
    `bounds` is the valid interval in math notation ("[1,inf)", "[0,1)"), checked by `from_dict` and the wizard;
    `check` is a rule bounds cannot say (a device string, module names): the value's problem, else None."""
    meta = dict(group=group, help=help, commands=commands, flags=flags, choices=choices, nargs=nargs, basic=basic,
                bounds=bounds, check=check)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


# -- rules bounds cannot express: one function each, used by Config (so the CLI and presets) and the wizard ---------

DEVICE_NAMES = ("auto", "cuda", "cuda:N", "mps", "xpu", "cpu")
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
# diffusers spellings of the same projections (adapters map them, see sidestep.model.keys)
PROJECTION_ALIASES = ("to_q", "to_k", "to_v", "to_out.0")


def device_problem(value: str) -> str | None:
    """Only the spelling: whether the device exists on this machine is known at model load."""
    if re.fullmatch(r"auto|cpu|mps|(cuda|xpu)(:\d+)?", value):
        return None
    return f"{value!r}: use {', '.join(DEVICE_NAMES[:-1])} or {DEVICE_NAMES[-1]}"


def target_modules_problem(value: list[str]) -> str | None:
    if not value:
        return f"needs at least one of {' '.join(PROJECTIONS)}"
    unknown = [name for name in value if name not in PROJECTIONS + PROJECTION_ALIASES]
    return f"unknown projection {unknown[0]!r}; use {' '.join(PROJECTIONS)}" if unknown else None


def combination_problem(config: "Config") -> str | None:
    """Options that are each valid but do not go together, as a one-line error naming the flag to change."""
    if config.quantize_base != "none" and config.adapter_type != "lora":
        return (f"--quantize-base {config.quantize_base} works with --adapter-type lora only (PEFT knows 4-bit base "
                "layers; LyCORIS does not); use --quantize-base none")
    return None


@dataclass
class Config:
    # Model and paths
    checkpoint_dir: str | None = opt(None, "Model and paths", "Root checkpoints directory (holds acestep-v15-turbo/, "
                                     "vae/, Qwen3-Embedding-0.6B/)", MODEL_CMDS + ("models", "generate"), basic=True)
    model_variant: str = opt("turbo", "Model and paths", "Model variant (turbo, base, sft, xl-turbo, xl-base, xl-sft) or any model folder name",
                             MODEL_CMDS + ("generate",), basic=True)
    base_model: str | None = opt(None, "Model and paths", "Base a fine-tune descends from, when its config.json "
                                 "cannot tell (xl-* only for XL fine-tunes)", MODEL_CMDS,
                                 choices=("turbo", "base", "sft", "xl-turbo", "xl-base", "xl-sft"))
    dataset_dir: str | None = opt(None, "Model and paths", "Preprocessed tensor folder (with manifest.json)",
                                  TRAIN + ESTIMATE, basic=True)

    # Device and precision
    device: str = opt("auto", "Device and precision", "auto, cuda, cuda:N, mps, xpu or cpu",
                      MODEL_CMDS + ("generate",), check=device_problem)
    precision: str = opt("auto", "Device and precision", "auto (bf16 on CUDA/XPU, fp16 on MPS, fp32 on CPU), "
                         "bf16, fp16 or fp32", MODEL_CMDS + ("generate",), choices=("auto", "bf16", "fp16", "fp32"))

    devices: int = opt(1, "Device and precision", "Processes (GPUs) per machine; >1 trains data-parallel",
                       bounds="[1,inf)")
    num_nodes: int = opt(1, "Device and precision", "Machines taking part (multi-node launch, see README)",
                         bounds="[1,inf)")
    strategy: str = opt("auto", "Device and precision", "Distribution strategy (Lightning Fabric)",
                        choices=("auto", "ddp", "fsdp"))

    # Adapter
    adapter_type: str = opt("lora", "Adapter", "lora (PEFT) or lokr (LyCORIS)", choices=("lora", "lokr"), basic=True)

    # LoRA
    rank: int = opt(64, "LoRA", "LoRA rank", flags=("-r", "--rank"), basic=True, bounds="[1,inf)")
    alpha: int = opt(128, "LoRA", "LoRA alpha (scale = alpha / rank)", basic=True, bounds="[1,inf)")
    dropout: float = opt(0.1, "LoRA", "Dropout on the LoRA branch", bounds="[0,1)")
    attention_type: str = opt("both", "LoRA", "Attention to adapt: both, self or cross",
                              TRAIN + ESTIMATE, choices=("both", "self", "cross"))
    target_modules: list[str] = opt(["q_proj", "k_proj", "v_proj", "o_proj"], "LoRA",
                                    "Projections to adapt", TRAIN + ESTIMATE, nargs="+", check=target_modules_problem)
    bias: str = opt("none", "LoRA", "Bias training: none, all, lora_only", choices=("none", "all", "lora_only"))

    # LoKR
    lokr_linear_dim: int = opt(64, "LoKR", "LoKR linear dimension (like LoRA rank)", basic=True, bounds="[1,inf)")
    lokr_linear_alpha: int = opt(128, "LoKR", "LoKR linear alpha", basic=True, bounds="[1,inf)")
    lokr_factor: int = opt(-1, "LoKR", "Kronecker factor (-1 = automatic)")
    lokr_decompose_both: bool = opt(False, "LoKR", "Decompose both Kronecker factors")
    lokr_use_tucker: bool = opt(False, "LoKR", "Tucker decomposition")
    lokr_use_scalar: bool = opt(False, "LoKR", "Trainable scalar")
    lokr_weight_decompose: bool = opt(False, "LoKR", "DoRA-style weight decomposition")

    # Training hyperparameters
    learning_rate: float = opt(1e-4, "Training", "Learning rate (1.0 for prodigy)", flags=("--lr", "--learning-rate"),
                               basic=True, bounds="(0,inf)")
    batch_size: int = opt(1, "Training", "Different songs per batch and process (length neighbours, cropped to "
                          "the shortest)", TRAIN + ESTIMATE, basic=True, bounds="[1,inf)")
    gradient_accumulation: int = opt(4, "Training", "Steps accumulated per optimizer step", bounds="[1,inf)")
    epochs: int = opt(100, "Training", "Maximum epochs", basic=True, bounds="[1,inf)")
    warmup_steps: int = opt(100, "Training", "Optimizer steps of LR warm-up (10% -> 100%)", bounds="[0,inf)")
    weight_decay: float = opt(0.01, "Training", "Weight decay", bounds="[0,inf)")
    max_grad_norm: float = opt(1.0, "Training", "Gradient clipping norm", bounds="(0,inf)")
    seed: int = opt(42, "Training", "Random seed", TRAIN + ESTIMATE + PREPROCESS + ("generate",))
    shift: float = opt(3.0, "Training", "Inference shift stored with the adapter (turbo 3.0, base/sft 1.0); "
                       "does not change training")
    num_inference_steps: int = opt(8, "Training", "Inference steps stored with the adapter (turbo 8, base/sft 50)",
                                   bounds="[1,inf)")
    optimizer_type: str = opt("adamw", "Training", "adamw, adamw8bit, adafactor or prodigy",
                              choices=("adamw", "adamw8bit", "adafactor", "prodigy"))
    scheduler_type: str = opt("cosine", "Training", "LR schedule (prodigy forces constant)",
                              choices=("cosine", "cosine_restarts", "linear", "constant", "constant_with_warmup"))
    gradient_checkpointing: bool = opt(True, "Training", "Recompute activations in backward to save memory",
                                       TRAIN + ESTIMATE)
    quantize_base: str = opt("none", "Training", "Keep the frozen decoder linears in 4-bit (nf4, bitsandbytes, "
                             "CUDA only; LoRA trains in bf16)", choices=("none", "nf4"))
    compile: bool = opt(False, "Training", "torch.compile the decoder blocks (CUDA graphs when --chunk-duration "
                        "makes shapes static on CUDA)")
    dry_run: bool = opt(False, "Training", "Print the predicted peak memory for these settings and exit")
    offload_encoder: bool = opt(False, "Training", "Keep VAE and text encoder on the CPU except while used")

    max_bad_steps: int = opt(5, "Training", "Stop (with a checkpoint of the last good state) after this many "
                             "optimizer steps in a row with a NaN/inf loss or gradient; each one is skipped",
                             bounds="[1,inf)")

    # Corrected training
    cfg_ratio: float = opt(0.15, "Corrected training", "CFG dropout: chance a sample's condition becomes the "
                           "learned null condition", ("fixed", "selective") + ESTIMATE, bounds="[0,1]")

    # Data loading
    chunk_duration: float = opt(0.0, "Data loading", "Train on random crops of this many seconds (0 = whole "
                                "songs); crops cover each song evenly over epochs", TRAIN + ESTIMATE)
    num_workers: int = opt(4, "Data loading", "Loader worker processes (always 0 on Windows)", bounds="[0,inf)")
    pin_memory: bool = opt(True, "Data loading", "Pin host memory for faster GPU copies")
    prefetch_factor: int = opt(2, "Data loading", "Batches each worker prefetches", bounds="[1,inf)")
    persistent_workers: bool = opt(True, "Data loading", "Keep workers alive between epochs")

    # Checkpointing
    output_dir: str | None = opt(None, "Checkpointing", "Where adapters, checkpoints and logs go", basic=True)
    save_every: int = opt(10, "Checkpointing", "Save a resumable checkpoint every N epochs", bounds="[1,inf)")
    resume_from: str | None = opt(None, "Checkpointing", "Checkpoint folder to resume from")

    # Logging
    log_dir: str | None = opt(None, "Logging", "TensorBoard folder (default {output-dir}/runs)")
    log_every: int = opt(10, "Logging", "Log loss and LR every N optimizer steps", bounds="[1,inf)")
    log_heavy_every: int = opt(50, "Logging", "Log per-layer gradient norms every N optimizer steps")
    sample_every_n_epochs: int = opt(0, "Logging", "Audio preview every N epochs (0 = off)", bounds="[0,inf)")
    sample_at_start: bool = opt(False, "Logging", "Also render previews before the first step")
    sample_prompt: list[str] = opt([], "Logging", "Preview prompt (repeatable; default: the first dataset "
                                   "captions)", nargs="append")
    sample_lyrics: list[str] = opt([], "Logging", "Preview lyrics (once for all prompts, or once per prompt)",
                                   nargs="append")
    sample_duration: float = opt(10.0, "Logging", "Seconds of audio per preview", bounds="(0,600]")
    val_split: float = opt(0.0, "Logging", "Hold out this fraction of the dataset for a validation loss each epoch",
                           bounds="[0,1)")
    val_dataset_dir: str | None = opt(None, "Logging", "Validate on this preprocessed folder instead")
    keep_best: bool = opt(False, "Logging", "Keep the adapter of the lowest validation loss in {output-dir}/best")

    # Preprocessing
    preprocess: bool = opt(False, "Preprocessing", "Preprocess --audio-dir into --tensor-output before training")
    audio_dir: str | None = opt(None, "Preprocessing", "Folder of songs (wav, flac, mp3, ogg)", TRAIN + PREPROCESS,
                                basic=True)
    dataset_json: str | None = opt(None, "Preprocessing", "Dataset JSON with captions, lyrics and metadata",
                                   TRAIN + PREPROCESS, basic=True)
    tensor_output: str | None = opt(None, "Preprocessing", "Where the preprocessed tensors go (a --dataset-dir)",
                                    TRAIN + PREPROCESS, basic=True)
    max_duration: float = opt(240.0, "Preprocessing", "Seconds of each song used (longer files are cut)",
                              TRAIN + PREPROCESS, bounds="(0,inf)")
    vae_mode: str = opt("sample", "Preprocessing", "VAE latent: sample the posterior (as upstream) or take its mean",
                        TRAIN + PREPROCESS, choices=("sample", "mean"))

    # Estimation and selective training
    estimate_batches: int = opt(5, "Estimation", "Batches the sensitivity is averaged over", ESTIMATE, bounds="[1,inf)")
    top_k: int = opt(16, "Estimation", "Modules kept in the module config", ESTIMATE, basic=True, bounds="[1,inf)")
    output: str = opt("module_config.json", "Estimation", "Where the module config JSON goes", ESTIMATE, basic=True)
    module_config: str | None = opt(None, "Selective", "Module config JSON from `train.py estimate` (its top-k "
                                    "modules are the adapter targets)", ("selective",), basic=True)

    # Demo
    demo_dir: str = opt("./demo", "Demo", "Folder the demo writes its tiny checkpoint and outputs to", ("demo",))

    def __post_init__(self) -> None:
        # The one place a declared choice or bound is enforced: every Config (CLI flags, presets, the wizard,
        # code) passes here, so no caller re-checks a bound by hand.
        for f in dataclasses.fields(self):
            problem = field_problem(f, getattr(self, f.name))
            if problem:
                raise SidestepError(f"{flag_of(f)} {problem}")
        problem = combination_problem(self)
        if problem:
            raise SidestepError(problem)

    @classmethod
    def fields(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "Config":
        """Build from a JSON-like dict (presets, saved runs); unknown keys and wrong types are errors."""
        known = {f.name: f for f in cls.fields()}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise SidestepError(f"{source}: unknown option(s) {', '.join(unknown)}; remove them")
        values = {}
        for name, value in data.items():
            values[name] = _coerce(known[name], value, source)
            problem = field_problem(known[name], values[name])
            if problem:  # named as the file names it, before Config would name the flag
                raise SidestepError(f"{source}: option '{name}' {problem}")
        return cls(**values)

    @property
    def effective_num_workers(self) -> int:
        # Spawn-based workers crash on Windows with this loader (seed issue): always 0 there.
        # More workers than cores only adds start-up time (and a torch warning).
        return 0 if sys.platform == "win32" else min(self.num_workers, os.cpu_count() or 1)


def _coerce(f: dataclasses.Field, value: Any, source: str) -> Any:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    kind = type(default) if default is not None else str
    if value is None and default is None:
        return None
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str),
          list: lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)}[kind]
    if not ok(value):
        raise SidestepError(f"{source}: option '{f.name}' must be {kind.__name__}, got {value!r}")
    return float(value) if kind is float else value


def field_flags(f: dataclasses.Field) -> list[str]:
    return list(f.metadata["flags"]) or ["--" + f.name.replace("_", "-")]


def flag_of(f: dataclasses.Field) -> str:
    """The flag an error names (the long one)."""
    return field_flags(f)[-1]


def field_problem(f: dataclasses.Field, value: Any) -> str | None:
    """Why `value` breaks the field's declared choices, bounds or rule (`check`), else None."""
    choices = f.metadata.get("choices")
    if choices and value is not None and value not in choices:
        return f"must be one of {', '.join(choices)}, got {value!r}"
    check = f.metadata.get("check")
    if check is not None and value is not None:
        problem = check(value)
        if problem:
            return problem
    return bounds_error(f, value)


def bounds_error(f: dataclasses.Field, value: Any) -> str | None:
    """Why `value` lies outside the field's `bounds` interval ("must be in [1, inf), got 0"), else None."""
    bounds = f.metadata.get("bounds")
    if not bounds or value is None:
        return None
    low, high = (float(x) for x in bounds[1:-1].split(","))
    above = value >= low if bounds[0] == "[" else value > low
    below = value <= high if bounds[-1] == "]" else value < high
    if above and below:
        return None
    return f"must be in {bounds[0]}{bounds[1:-1].replace(',', ', ')}{bounds[-1]}, got {value!r}"


def config_to_argv(config: Config, command: str) -> list[str]:
    """CLI arguments that reproduce `config` for `command` (only what differs from the defaults)."""
    import shlex

    default = Config()
    argv: list[str] = []
    for f in Config.fields():
        value = getattr(config, f.name)
        if command not in f.metadata["commands"] or value == getattr(default, f.name):
            continue
        flag = flag_of(f)
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list) and f.metadata["nargs"] == "append":
            for item in value:
                argv += [flag, shlex.quote(item)]
        elif isinstance(value, list):
            argv += [flag, *map(shlex.quote, value)]
        else:
            argv += [flag, shlex.quote(str(value))]
    return [command, *argv]

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

from sidestep.data.metadata import BUILT_FIELDS
from sidestep.data.prompts import TAG_POSITIONS
from sidestep.errors import SidestepError

TRAIN = ("fixed", "vanilla", "selective")
PREPROCESS = ("preprocess",)
DATASET = ("dataset",)
ESTIMATE = ("estimate",)
MODEL_CMDS = TRAIN + PREPROCESS + ESTIMATE
FIXED = ("fixed", "selective")
LOSS_FUNCTIONS = ("mse", "huber", "pseudo_huber")  # sidestep/train/losses.py holds the formulas
LOSS_WEIGHTINGS = ("none", "min_snr", "flow_snr")
RANDOM_SEED_MAX = 2**32 - 1  # what every seeded generator (numpy, Lightning) accepts


def opt(default: Any, group: str, help: str, commands: tuple[str, ...] = TRAIN, flags: tuple[str, ...] = (),
        choices: tuple | None = None, nargs: str | None = None, basic: bool = False, bounds: str | None = None,
        kind: type | None = None, metavar: str | None = None, check: Callable[[Any], str | None] | None = None
        ) -> Any:
    """A config field. `flags` defaults to `--field-name`; `basic` marks wizard basic-mode questions;
    `bounds` is the valid interval in math notation ("[1,inf)", "[0,1)"), checked by `from_dict` and the wizard;
    `kind` is the value type of a field whose default is None (else str); `metavar` names the value in --help
    (default: the field name's last word); `check` is a rule bounds cannot say (a device string, module names):
    the value's problem, else None."""
    meta = dict(group=group, help=help, commands=commands, flags=flags, choices=choices, nargs=nargs, basic=basic,
                bounds=bounds, kind=kind, metavar=metavar, check=check)
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


# Rules across options that a lower package owns (the adapter kinds: which of them train on a 4-bit base) are
# registered here by that package when it is imported, so Config checks them without importing it.
COMBINATION_RULES: list[Callable[["Config"], str | None]] = []


def combination_problem(config: "Config") -> str | None:
    """Options that are each valid but do not go together, as a one-line error naming the flag to change."""
    return next((problem for rule in COMBINATION_RULES if (problem := rule(config))), None)


@dataclass
class Config:
    # Model and paths
    checkpoint_dir: str | None = opt(None, "Model and paths", "Root checkpoints directory (holds acestep-v15-turbo/, "
                                     "vae/, Qwen3-Embedding-0.6B/)", MODEL_CMDS + ("models", "generate"), basic=True)
    model_variant: str = opt("turbo", "Model and paths", "Model variant (turbo, base, sft, xl-turbo, xl-base, xl-sft) or any model folder name",
                             MODEL_CMDS + ("generate",), basic=True)
    base_model: str | None = opt(None, "Model and paths", "Base a fine-tune descends from, when its config.json "
                                 "cannot tell (2B or XL: the size comes from config.json)", MODEL_CMDS,
                                 choices=("turbo", "base", "sft"))
    dataset_dir: str | None = opt(None, "Model and paths", "Preprocessed tensor folder (with manifest.json)",
                                  TRAIN + ESTIMATE, basic=True)

    # Device and precision
    device: str = opt("auto", "Device and precision", "auto, cuda, cuda:N, mps, xpu or cpu",
                      MODEL_CMDS + ("generate",) + DATASET, check=device_problem)
    precision: str = opt("auto", "Device and precision", "auto (bf16 on CUDA/XPU, fp16 on MPS, fp32 on CPU), "
                         "bf16, fp16 or fp32", MODEL_CMDS + ("generate",), choices=("auto", "bf16", "fp16", "fp32"))

    devices: int = opt(1, "Device and precision", "Processes (GPUs) per machine; >1 trains data-parallel",
                       bounds="[1,inf)")
    num_nodes: int = opt(1, "Device and precision", "Machines taking part (multi-node launch, see README)",
                         bounds="[1,inf)")
    strategy: str = opt("auto", "Device and precision", "Distribution strategy (Lightning Fabric)",
                        choices=("auto", "ddp", "fsdp"))

    # Adapter
    adapter_type: str = opt("lora", "Adapter", "lora, dora (PEFT), lokr, loha or oft (LyCORIS); the kinds are "
                            "sidestep/adapters/", choices=("lora", "dora", "lokr", "loha", "oft"), basic=True)

    init_adapter: str | None = opt(None, "Adapter", "Start training from this adapter (same kind and shape): a "
                                   "Side-Step folder, ACE-Step PEFT, diffusers or ComfyUI file")

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

    # LoHA (LyCORIS `loha`; defaults are LyCORIS' own)
    loha_linear_dim: int = opt(4, "LoHA", "LoHA linear dimension (rank of each Hadamard factor)", basic=True,
                               bounds="[1,inf)")
    loha_linear_alpha: float = opt(1.0, "LoHA", "LoHA linear alpha (scale = alpha / dim)", basic=True,
                                   bounds="(0,inf)")
    loha_use_tucker: bool = opt(False, "LoHA", "Tucker decomposition (conv kernels only)")
    loha_use_scalar: bool = opt(False, "LoHA", "Trainable scalar")
    loha_weight_decompose: bool = opt(False, "LoHA", "DoRA-style weight decomposition")

    # OFT (LyCORIS `diag-oft`; defaults are LyCORIS' own)
    oft_block_size: int = opt(4, "OFT", "OFT block size (the output rows are rotated in blocks of about this size)",
                              basic=True, bounds="[1,inf)")
    oft_constraint: float = opt(0.0, "OFT", "Bound on the rotation's norm, per output row (0 = none)",
                                bounds="[0,inf)")
    oft_rescaled: bool = opt(False, "OFT", "Train a rescale factor per output row")

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
    seed: int = opt(42, "Training", "Random seed (-1 = pick one; the seed used is recorded with the output)",
                    TRAIN + ESTIMATE + PREPROCESS + ("generate",), bounds=f"[-1,{RANDOM_SEED_MAX}]")
    shift: float = opt(3.0, "Training", "Inference shift stored with the adapter (turbo 3.0, base/sft 1.0); "
                       "does not change training", bounds="(0,inf)")
    num_inference_steps: int = opt(8, "Training", "Inference steps stored with the adapter (turbo 8, base/sft 50)",
                                   bounds="[1,inf)")
    optimizer_type: str = opt("adamw", "Training", "adamw, adamw8bit, adafactor or prodigy",
                              choices=("adamw", "adamw8bit", "adafactor", "prodigy"))
    scheduler_type: str = opt("cosine", "Training", "LR schedule (prodigy forces constant)",
                              choices=("cosine", "cosine_restarts", "linear", "constant", "constant_with_warmup"))
    gradient_checkpointing: bool = opt(True, "Training", "Recompute activations in backward to save memory",
                                       TRAIN + ESTIMATE)
    gradient_checkpointing_ratio: float = opt(1.0, "Training", "Share of the decoder blocks (the first ones) that "
                                              "recompute their activations: 1 = all, 0 = none; less saves time, "
                                              "costs memory", TRAIN + ESTIMATE, bounds="[0,1]")
    checkpointing_policy: str = opt("full", "Training", "What a checkpointed block keeps: full (only its input) "
                                    "or selective (also its matmul and attention outputs; recomputes only the "
                                    "elementwise work)", TRAIN + ESTIMATE, choices=("full", "selective"))
    quantize_base: str = opt("none", "Training", "Keep the frozen decoder linears in 4-bit (nf4, bitsandbytes, "
                             "CUDA only; LoRA trains in bf16)", choices=("none", "nf4"))
    compile: bool = opt(False, "Training", "torch.compile the decoder blocks (CUDA graphs when --chunk-duration "
                        "makes shapes static on CUDA)")
    fit_memory: float = opt(0.0, "Training", "How much GPU memory do you have, in GiB? Picks the batch size, "
                            "checkpointing ratio and, on CUDA, --quantize-base nf4 that train fastest within it "
                            "(0 = keep these settings; --dry-run shows the table)", bounds="[0,inf)")
    dry_run: bool = opt(False, "Training", "Print the predicted peak memory for these settings and exit")
    offload_encoder: bool = opt(False, "Training", "Keep VAE and text encoder on the CPU except while used")

    max_bad_steps: int = opt(5, "Training", "Stop (with a checkpoint of the last good state) after this many "
                             "optimizer steps in a row with a NaN/inf loss or gradient; each one is skipped",
                             bounds="[1,inf)")

    # Corrected training
    cfg_ratio: float = opt(0.15, "Corrected training", "CFG dropout: chance a sample's condition becomes the "
                           "learned null condition", ("fixed", "selective") + ESTIMATE, bounds="[0,1]")

    # Advanced training: all off by default (the objective stays exactly the model's own)
    loss_weighting: str = opt("none", "Advanced training", "Timestep weighting of each sample's loss: none, "
                              "min_snr = min(1, gamma/SNR), flow_snr = min((1-t)^2, gamma*t^2), with SNR = "
                              "((1-t)/t)^2", choices=LOSS_WEIGHTINGS)
    snr_gamma: float = opt(5.0, "Advanced training", "gamma of --loss-weighting", bounds="(0,inf)")
    loss_fn: str = opt("mse", "Advanced training", "Loss of the velocity error e: mse e^2, huber (e^2 up to "
                       "delta, then 2*delta*|e| - delta^2), pseudo_huber 2*delta^2*(sqrt(1+(e/delta)^2) - 1)",
                       choices=LOSS_FUNCTIONS)
    huber_delta: float = opt(1.0, "Advanced training", "delta of --loss-fn huber / pseudo_huber", bounds="(0,inf)")
    timestep_mu: float | None = opt(None, "Advanced training", "Logit-normal mu of the training timesteps "
                                    "(default: the model's config.json)", FIXED, kind=float)
    timestep_sigma: float | None = opt(None, "Advanced training", "Logit-normal sigma of the training timesteps "
                                       "(default: the model's config.json)", FIXED, bounds="(0,inf)",
                                       kind=float)
    ema_decay: float = opt(0.0, "Advanced training", "Exponential moving average of the adapter weights "
                           "(e.g. 0.999; 0 = off), saved as its own adapter in {output-dir}/ema", bounds="[0,1)")
    ema_start_step: int = opt(0, "Advanced training", "Optimizer step the EMA starts averaging at (until then it "
                              "copies the weights)", bounds="[0,inf)")
    lr_self: float = opt(1.0, "Advanced training", "Learning-rate factor of the self-attention adapter modules "
                         "(x --lr)", bounds="(0,inf)")
    lr_cross: float = opt(1.0, "Advanced training", "Learning-rate factor of the cross-attention adapter modules "
                          "(x --lr)", bounds="(0,inf)")

    # Data loading
    chunk_duration: float = opt(0.0, "Data loading", "Train on random crops of this many seconds (0 = whole "
                                "songs); crops cover each song evenly over epochs", TRAIN + ESTIMATE, bounds="[0,inf)")
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
    learning_report: bool = opt(True, "Logging", "Learning report: loss with the adapter off/on on training and "
                                "held-out songs at fixed timesteps ({output-dir}/learning.json)")
    report_every: int = opt(0, "Logging", "Learning report every N epochs and after the last (0 = auto: as often "
                            "as keeps it under 10% of the training work)", bounds="[0,inf)")
    report_songs: int = opt(4, "Logging", "Training songs the learning report evaluates (spread over the dataset, "
                            "first 30 s of each; held-out songs are all evaluated)", bounds="[1,inf)")

    # Preprocessing
    preprocess: bool = opt(False, "Preprocessing", "Preprocess --audio-dir into --tensor-output before training")
    audio_dir: str | None = opt(None, "Preprocessing", "Folder of songs (wav, flac, mp3, ogg)",
                                TRAIN + PREPROCESS + DATASET, basic=True)
    dataset_json: str | None = opt(None, "Preprocessing", "Dataset JSON with captions, lyrics and metadata",
                                   TRAIN + PREPROCESS, basic=True)
    tensor_output: str | None = opt(None, "Preprocessing", "Where the preprocessed tensors go (a --dataset-dir)",
                                    TRAIN + PREPROCESS, basic=True)
    max_duration: float = opt(240.0, "Preprocessing", "Seconds of each song used (longer files are cut)",
                              TRAIN + PREPROCESS, bounds="(0,86400]")
    vae_mode: str = opt("sample", "Preprocessing", "VAE latent: sample the posterior (as upstream) or take its mean",
                        TRAIN + PREPROCESS, choices=("sample", "mean"))

    # Dataset JSON (train.py dataset)
    dataset_out: str | None = opt(None, "Dataset JSON", "The dataset JSON to write or read (default: "
                                  "AUDIO_DIR/dataset.json)", DATASET, flags=("--out",), basic=True, metavar="JSON")
    overwrite: list[str] = opt([], "Dataset JSON", "Refill this field even where it holds a value (repeatable): "
                               + ", ".join(BUILT_FIELDS), DATASET, nargs="append", choices=BUILT_FIELDS,
                               metavar="FIELD")
    transcribe: str | None = opt(None, "Dataset JSON", "Transcribe missing lyrics with this speech-recognition "
                                 "model (Whisper path or hub name; offline with HF_HUB_OFFLINE=1)", DATASET,
                                 metavar="MODEL")
    custom_tag: str | None = opt(None, "Dataset JSON", "Trigger word added to every caption (metadata.custom_tag)",
                                 DATASET, flags=("--tag",))
    tag_position: str | None = opt(None, "Dataset JSON", "Where the trigger word goes in the caption",
                                   DATASET, choices=TAG_POSITIONS)
    genre_ratio: float | None = opt(None, "Dataset JSON", "Percent of songs whose caption is their genre",
                                    DATASET, bounds="[0,100]", kind=float)
    review: bool = opt(False, "Dataset JSON", "Show every song and field with its source; flag doubtful values",
                       DATASET)
    set_values: list[str] = opt([], "Dataset JSON", "Set a field by hand: SONG:FIELD=VALUE (repeatable; "
                                "source becomes user)", DATASET, flags=("--set",), nargs="append",
                                metavar="SONG:FIELD=VALUE")
    show_prompt: str | None = opt(None, "Dataset JSON", "Print the exact prompt preprocess builds for this song",
                                  DATASET, metavar="SONG")

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
        if self.seed == -1:  # "pick a seed": chosen once here, so every record of this config holds the real one
            import secrets

            self.seed = secrets.randbelow(RANDOM_SEED_MAX + 1)

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


def field_kind(f: dataclasses.Field) -> type:
    """The value type of a field: its default's, or the declared `kind` of a None default (else str)."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return type(default) if default is not None else (f.metadata.get("kind") or str)


def _coerce(f: dataclasses.Field, value: Any, source: str) -> Any:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    kind = field_kind(f)
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
    values = value if isinstance(value, list) else [value]  # a repeatable flag: each value is a choice
    bad = [v for v in values if v is not None and v not in (choices or (v,))]
    if bad:
        return f"must be one of {', '.join(choices)}, got {bad[0]!r}"
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

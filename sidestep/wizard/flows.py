"""Wizard flows: training (corrected / vanilla, every adapter kind), preprocessing, the experimental tools.

Every question about an option is generated from `Config` field metadata (help, type, choices,
bounds, `basic`, the subcommands that take it), so the wizard and the CLI fill the same dataclass.
A flow ends in a summary, the equivalent CLI command and a confirmation, then calls the CLI's
own run function for that subcommand.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich import box
from rich.table import Table

from sidestep import presets as preset_store
from sidestep.config import Config, field_kind
from sidestep.data.manifest import has_samples
from sidestep.adapters import KINDS, option_owners
from sidestep.errors import SidestepError
from sidestep.io import atomic_write_text
from sidestep.settings import MODES, Settings, check_checkpoint_dir
from sidestep.wizard.prompts import Form, GoBack, Prompter, Question, Step

# Test seam: when set, an action appends {"command", "config", "args"} to this JSON-lines file instead of running.
DRY_RUN_ENV = "SIDESTEP_WIZARD_DRY_RUN"

CONFIG_FIELDS = {f.name: f for f in Config.fields()}
PATH_FIELDS = {"checkpoint_dir", "dataset_dir", "output_dir", "resume_from", "init_adapter", "log_dir", "audio_dir",
               "dataset_json", "tensor_output", "module_config", "output"}
# attention_type / target_modules sit in the LoRA group but choose every kind's targets; each kind's own group
# (its label) is titled after it.
STEP_TITLES = {"LoRA": lambda a: f"{KINDS[_adapter(a)].label} settings" if KINDS[_adapter(a)].library == "PEFT"
               else "Adapter targets",
               **{k.label: f"{k.label} settings" + (" (experimental)" if k.experimental else "")
                  for k in KINDS.values() if k.library != "PEFT"},
               "Training": "Training settings", "Selective": "Selective training", "Estimation": "Estimation settings"}
# Asked only where they are needed, and then an answer is needed.
REQUIRED = ("checkpoint_dir", "dataset_dir", "output_dir", "audio_dir", "tensor_output", "module_config")
# Training flows ask "preprocess first?" before the model questions: it decides whether dataset_dir is asked.
PREPROCESS_STEP = ("Preprocessing",)
PREPROCESS_FIRST = ("audio_dir", "dataset_json", "tensor_output", "max_duration", "vae_mode")
MODE_LABELS = {"fixed": "Corrected (recommended): the model's own timesteps + CFG dropout",
               "vanilla": "Vanilla: the upstream trainer (discrete turbo timesteps, no CFG dropout)"}
# `?`: what the option does for the sound or the run, typical values and the trade-off (one plain sentence).
HELP: dict[str, str] = {
    "checkpoint_dir": "The folder holding the ACE-Step model folders (acestep-v15-turbo/, vae/, ...); set once in "
                      "Settings.",
    "dataset_dir": "Your songs after preprocessing (a folder with manifest.json and .pt files); the adapter learns "
                   "from exactly these.",
    "output_dir": "Where the adapter, its checkpoints and logs go; a new folder per run keeps earlier runs safe.",
    "audio_dir": "The folder of your songs (wav, flac, mp3, ogg); 10-50 songs of one style is typical.",
    "dataset_json": "Captions, lyrics and BPM/key per song; without it each song is described by its file name, "
                    "which teaches the style less precisely.",
    "tensor_output": "Where the preprocessed songs go; training reads this folder.",
    "rank": "How much the adapter can learn: 16-64 is typical; higher copies the songs more closely but needs more "
            "memory and more songs to avoid overfitting.",
    "alpha": "How strongly the adapter is applied (scale = alpha / rank); 2 x rank is the usual choice, lower is "
             "subtler.",
    "lokr_linear_dim": "How much the LoKR adapter can learn (like LoRA's rank): 16-64 is typical; higher learns "
                       "more detail but needs more memory.",
    "lokr_linear_alpha": "How strongly the LoKR adapter is applied; 2 x the dimension is the usual choice.",
    "learning_rate": "How big each learning step is: 1e-4 is typical for AdamW (1.0 for Prodigy); higher learns "
                     "faster but can turn the sound harsh or unstable.",
    "batch_size": "Songs per step: 1 fits most GPUs; more gives smoother learning but needs more memory.",
    "gradient_accumulation": "Steps added up before the adapter changes: 4 is typical; more behaves like a larger "
                             "batch without the memory, but each change comes more slowly.",
    "epochs": "How many times every song is heard: 100-500 is typical for 10-50 songs; too many copies the songs, "
              "too few barely changes the sound.",
    "warmup_steps": "Optimizer steps at the start where the learning rate rises gently: about 5-10% of the run; "
                    "longer than the run never reaches the full rate.",
    "optimizer_type": "adamw is the safe default; adamw8bit saves memory on CUDA; prodigy finds its own learning "
                      "rate (use 1.0).",
    "scheduler_type": "How the learning rate falls over the run: cosine is smooth and safe; constant keeps it "
                      "fixed.",
    "device": "Where training runs: auto picks the GPU when there is one; cpu works but is very slow.",
    "precision": "Number format: auto picks bf16 on GPUs (half the memory, same quality) and fp32 on the CPU.",
    "dropout": "Randomly mutes part of the adapter while learning: 0.1 is typical; more resists overfitting on "
               "few songs but learns more slowly.",
    "save_every": "A resumable checkpoint every N epochs: more often costs disk space, less often loses more work "
                  "on a crash.",
    "cfg_ratio": "How often a song is learned without its caption, so prompts steer the adapter well: 0.15 is "
                 "the model's own value.",
    "chunk_duration": "Train on random crops of this many seconds (0 = whole songs): 30-60 s saves memory on "
                      "long songs.",
    "offload_encoder": "Keep the VAE and text encoder on the CPU when not used: saves GPU memory, costs a little "
                       "time.",
    "gradient_checkpointing": "Recompute instead of store: saves much GPU memory for about 30% more time.",
    "max_duration": "Seconds of each song used; longer songs are cut: 240 covers most songs, less saves memory.",
}
LEVEL_LABELS = {"basic": "Basic: only what most people need to answer",
                "advanced": "Advanced: every option"}


@dataclass
class Session:
    """What every flow needs: the prompter, the saved settings, and how actions run."""

    prompter: Prompter
    settings: Settings
    plain: bool = False
    recent: dict[str, Any] = field(default_factory=dict)  # dataset used last, offered again this session
    dry_run: Path | None = field(default_factory=lambda: Path(os.environ[DRY_RUN_ENV])
                                 if os.environ.get(DRY_RUN_ENV) else None)

    def table(self, title: str | None = None, header: bool = True) -> Table:
        return Table(title=title, show_header=header, box=box.ASCII if self.plain else box.ROUNDED)


# -- questions generated from Config -------------------------------------------------------------------------------

def _level(answers: dict) -> str:
    return answers.get("_level", "basic")


def _adapter(answers: dict) -> str:
    return answers.get("adapter_type", "lora")


def adapter_choices() -> list[tuple[str, str]]:
    """(adapter_type, label) for every registered kind."""
    return [(k.name, k.label + (" (experimental)" if k.experimental else "")) for k in KINDS.values()]


def _all(*conditions: Callable[[dict], bool] | None) -> Callable[[dict], bool]:
    conds = [c for c in conditions if c is not None]
    return lambda answers: all(c(answers) for c in conds)


def _field_default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def field_question(f: dataclasses.Field, command_of: Callable[[dict], str], basic: bool | None = None) -> Question:
    """The question for one Config field; asked when its subcommand takes it (and in basic mode only if basic;
    `basic` overrides the field's metadata)."""
    default = _field_default(f)
    kind = list if isinstance(default, list) else field_kind(f)
    in_command = lambda answers: command_of(answers) in f.metadata["commands"]  # noqa: E731
    basic = f.metadata["basic"] if basic is None else basic
    basic = None if basic else (lambda answers: _level(answers) == "advanced")
    flag = (f.metadata["flags"] or ("--" + f.name.replace("_", "-"),))[-1].lstrip("-")
    text = "Learning rate" if f.name == "learning_rate" else f.metadata["help"]  # the optimizer is asked apart
    return Question(key=f.name, text=f"{flag}: {text}", kind=kind,
                    choices=tuple(f.metadata["choices"] or ()), help=HELP.get(f.name, f.metadata["help"]),
                    optional=default is None and f.name not in REQUIRED, path=f.name in PATH_FIELDS,
                    config_field=f, when=_all(in_command, basic))


def config_steps(command_of: Callable[[dict], str], skip: tuple[str, ...] = (),
                 tweaks: dict[str, dict[str, Any]] | None = None, first: tuple[str, ...] = ()) -> list[Step]:
    """One step per Config group (groups named in `first` lead), a question per field; `tweaks` adds
    conditions, checks and askers."""
    steps: dict[str, Step] = {group: Step(STEP_TITLES.get(group, group)) for group in first}
    for f in Config.fields():
        if f.name in skip:
            continue
        tweak = dict((tweaks or {}).get(f.name, {}))
        q = field_question(f, command_of, tweak.pop("basic", None))
        for attr, value in tweak.items():
            setattr(q, attr, _all(q.when, value) if attr == "when" else value)
        group = f.metadata["group"]
        steps.setdefault(group, Step(STEP_TITLES.get(group, group))).questions.append(q)
    return [step for step in steps.values() if step.questions]


# -- checks -------------------------------------------------------------------------------------------------------

def _check_dir(value: str, answers: dict) -> str | None:
    return None if Path(value).is_dir() else f"{value}: folder not found"


def _check_file(value: str, answers: dict) -> str | None:
    return None if Path(value).is_file() else f"{value}: file not found"


def _check_dataset(value: str, answers: dict) -> str | None:
    folder = Path(value)
    if not folder.is_dir():
        return f"{value}: folder not found (preprocess your songs first: main menu, Preprocess audio)"
    if not has_samples(folder) and not _check_songs(value, answers):
        return (f"{value}: holds songs, not preprocessed tensors; type b until 'preprocess' and answer y to "
                "preprocess them first (or main menu, Preprocess audio)")
    if not has_samples(folder):
        return f"{value}: no preprocessed tensors (manifest.json / .pt files) here; preprocess your songs first"
    return None


def _check_songs(value: str, answers: dict) -> str | None:
    """A songs folder with at least one song (the same scan preprocessing does)."""
    if not Path(value).is_dir():
        return f"{value}: folder not found"
    from sidestep.data.preprocess import scan_audio_dir

    songs, _ = scan_audio_dir(Path(value))
    if not songs:
        return f"{value}: 0 songs found (Side-Step reads wav, flac, mp3 and ogg); choose the folder holding them"
    return None


def _songs_note(prompter: Prompter, value: str) -> None:
    from sidestep.data.preprocess import scan_audio_dir

    songs, _ = scan_audio_dir(Path(value))
    json_note = "; dataset.json found beside them" if (Path(value) / "dataset.json").is_file() else ""
    prompter.say(f"    {len(songs)} song(s) found{json_note}", "green")


def _dataset_asker(command_of: Callable[[dict], str]):
    """The tensor folder; given a folder of songs instead, offer to preprocess them first (training only)."""
    def ask(prompter: Prompter, q: Question, default: Any, answers: dict) -> Any:
        offer = command_of(answers) in CONFIG_FIELDS["preprocess"].metadata["commands"]
        check = (lambda v, a: None if _check_songs(v, a) is None else _check_dataset(v, a)) if offer else q.check
        plain = dataclasses.replace(q, asker=None, check=check)
        while True:
            value = prompter.ask(plain, default, answers)
            if has_samples(Path(value)):
                return value
            from sidestep.data.preprocess import scan_audio_dir

            songs = len(scan_audio_dir(Path(value))[0])
            if prompter.confirm(f"{value} holds {songs} song(s), not training tensors. Preprocess them first?"):
                answers.update(preprocess=True, audio_dir=value)  # the preprocessing questions follow
                return value
            default = value

    return ask


def _only_model(answers: dict):
    try:
        models = _models(answers["checkpoint_dir"])
    except (KeyError, SidestepError):
        return None
    return models[0] if len(models) == 1 else None


def _check_checkpoints(value: str, answers: dict) -> str | None:
    return check_checkpoint_dir(value)


# -- model choice -------------------------------------------------------------------------------------------------

def _models(root: str):
    from sidestep.model.discovery import scan_models

    return scan_models(root)


def variant_name(entry) -> str:
    """turbo / base / sft / xl-turbo / xl-base / xl-sft for the official folders (as --model-variant spells
    them), else the folder name."""
    from sidestep.model.discovery import VARIANT_ALIASES

    return next((alias for alias, name in VARIANT_ALIASES.items() if name == entry.name), entry.name)


def _model_entry(answers: dict):
    from sidestep.model.discovery import find_model

    try:
        return find_model(answers["checkpoint_dir"], answers["model_variant"])
    except (KeyError, SidestepError):
        return None


def needs_base_model(answers: dict) -> bool:
    """Only when the model's config.json cannot tell its base variant or its timestep parameters."""
    entry = _model_entry(answers)
    return entry is not None and (entry.base_variant is None or entry.timestep_mu is None
                                  or entry.timestep_sigma is None)


def _model_lines(prompter: Prompter, models) -> None:
    prompter.rows([(f"{i}.", m.name, m.label, f"base: {m.variant_label or '?'}") for i, m in enumerate(models, 1)])


def pick_model(prompter: Prompter, q: Question, default: Any, answers: dict) -> str:
    """Numbered list from discovery; answer a number, or text to fuzzy-search the names."""
    from sidestep.model.discovery import fuzzy_find

    models = _models(answers["checkpoint_dir"])
    names = [variant_name(m) for m in models]
    if len(models) == 1:  # nothing to choose
        prompter.say(f"  Model: {models[0].name} ({models[0].label}), the only one in {answers['checkpoint_dir']}",
                     "green")
        return names[0]
    current = default if default in names else (names[0] if names else None)
    prompter.say(f"  Models in {answers['checkpoint_dir']}:")
    _model_lines(prompter, models)
    shown = models[names.index(current)].name if current else ""
    while True:
        answer = prompter.raw(f"  Model: number, or text to search [{shown}]: ")
        if answer == "?":
            prompter.say("    official = a released ACE-Step folder; custom = a fine-tune. Type part of a "
                         "name to search.", "dim")
            continue
        pick = _match_model(models, names, answer, current, fuzzy_find)
        if isinstance(pick, str):
            entry = models[names.index(pick)]
            prompter.say(f"    -> {entry.name} ({entry.label}, base: {entry.variant_label or 'unknown'})", "green")
            return pick
        if pick:
            prompter.say("    Several match; type its number:", "yellow")
            prompter.rows([(f"{models.index(m) + 1}.", m.name, m.label) for m in pick], indent=6)
        else:
            prompter.say(f"    no model matches '{answer}'", "red")


def _match_model(models, names: list[str], answer: str, current: str | None, fuzzy_find):
    """A variant name when `answer` picks one model, else the list of candidates (empty: none)."""
    if not answer:
        return current if current is not None else []
    if answer.isdigit():
        index = int(answer) - 1
        return names[index] if 0 <= index < len(models) else []
    exact = [n for n, m in zip(names, models) if answer.lower() in (n.lower(), m.name.lower())]
    if exact:
        return exact[0]
    hits = fuzzy_find(models, answer)
    return names[models.index(hits[0])] if len(hits) == 1 else hits


# -- running an action --------------------------------------------------------------------------------------------

def cli_line(config: Config, command: str, width: int = 0) -> str:
    """The equivalent command line; with `width`, broken at flags with shell continuations to fit."""
    from sidestep.config import config_to_argv

    argv = config_to_argv(config, command)
    words = ["python train.py " + argv[0]]
    for token in argv[1:]:  # keep each flag with its values
        if token.startswith("--") or len(words) == 1:  # values may be negative numbers
            words.append(token)
        else:
            words[-1] += " " + token
    if width <= 0:
        return " ".join(words)
    lines = [words[0]]
    for word in words[1:]:
        if len(lines[-1]) + len(word) + 3 > width:
            lines[-1] += " \\"
            lines.append("    " + word)
        else:
            lines[-1] += " " + word
    return "\n".join(lines)


def execute(session: Session, command: str, config: Config, **extra: Any) -> int:
    """Run `command` through the CLI's own run function (or record it, in a dry run)."""
    session.recent["dataset_dir"] = config.tensor_output if command == "preprocess" else \
        (config.dataset_dir or session.recent.get("dataset_dir"))
    if command in ("fixed", "vanilla", "selective") and config.output_dir:
        session.recent["output_dir"] = config.output_dir
    if session.dry_run is not None:
        lines = session.dry_run.read_text().splitlines() if session.dry_run.is_file() else []
        lines.append(json.dumps({"command": command, "config": config.to_dict(), "args": extra}))
        atomic_write_text(session.dry_run, "\n".join(lines) + "\n")
        session.prompter.say(f"(dry run: recorded '{command}' instead of running it)", "yellow")
        return 0
    # The CLI's own command registry: the wizard runs exactly what `train.py <command>` runs.
    from sidestep.cli.commands import commands
    from sidestep.logs import quiet_libraries

    quiet_libraries()
    runner = next(c for c in commands() if c.name == command)
    args = argparse.Namespace(command=command, yes=True, plain=session.plain, debug=False, **extra)
    return int(runner.run(config, args) or 0)


def _summary(session: Session, config: Config, command: str, keys: list[str]) -> None:
    """The train command's own summary table for training, otherwise the answered options."""
    console = session.prompter.console
    if command in ("fixed", "vanilla", "selective"):
        from sidestep.cli.train_cmd import summary_table

        table = summary_table(config, command)
        table.box = box.ASCII if session.plain else table.box
        if command == "selective":  # what makes it selective, and it is corrected training too
            table.add_row("module-config", str(config.module_config))
            table.add_row("cfg-ratio", str(config.cfg_ratio))
    else:
        table = session.table(f"Side-Step {command}", header=False)
        for key in keys:
            value = getattr(config, key)
            table.add_row(key.replace("_", "-"), "-" if value is None else _show_value(value))
    for column in table.columns:  # a narrow terminal folds a long path instead of cutting it to "…"
        column.overflow = "fold"
    console.print(table)
    session.prompter.say("Same run from the command line:", "dim")
    console.print(cli_line(config, command, console.width), markup=False, highlight=False, soft_wrap=True)
    steps = planned_steps({}, config) if command in ("fixed", "vanilla", "selective") else None
    if steps is not None and config.warmup_steps > steps:
        session.prompter.say(f"Note: {config.warmup_steps} warm-up steps is longer than this run ({steps} optimizer "
                             f"steps), so it never reaches the full learning rate; set warmup-steps in advanced "
                             "mode (about 10% of the run).", "yellow")
    if command in ("fixed", "vanilla", "selective") and _runs_on_cpu(config.device):
        session.prompter.say("Training will run on the CPU (no GPU found or chosen): fine for a first try on a "
                             "few short songs, but a real run takes hours to days; a CUDA GPU is tens of times "
                             "faster.", "yellow")


def _runs_on_cpu(device: str) -> bool:
    if device == "cpu":
        return True
    if device != "auto":
        return False
    import torch

    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    xpu = hasattr(torch, "xpu") and torch.xpu.is_available()
    return not (torch.cuda.is_available() or mps or xpu)


def _show_value(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def review(session: Session, form: Form, answers: dict, build: Callable[[dict], Config], command_of:
           Callable[[dict], str], action: str, offer_preset: bool = False) -> Config | None:
    """Ask the form, show the summary, confirm. `b` at the end goes back into the form; None = cancelled."""
    prompter = session.prompter
    while True:
        form.run(answers)
        config = build(answers)
        _summary(session, config, command_of(answers), [k for k in form.answered(answers) if k in CONFIG_FIELDS])
        try:
            if offer_preset:
                _offer_preset(session, config)
            if not prompter.confirm(f"Start {action}?"):
                prompter.say("Cancelled; nothing was run.", "yellow")
                return None
            return config
        except GoBack:
            form.back()


def combination_check(build: Callable[[dict], Config]) -> Callable[[Question, Any, dict], str | None]:
    """A Form validator: the answers so far with this one must make a Config (the CLI's combination rules,
    and a preset's values, are checked there, so the wizard re-implements none of them)."""
    def validate(q: Question, value: Any, answers: dict) -> str | None:
        if q.key not in CONFIG_FIELDS and q.key != "_preset":
            return None
        try:
            build({**answers, q.key: value})
        except SidestepError as err:
            return str(err)
        return None

    return validate


def field_of_error(message: str) -> str | None:
    """The Config field a one-line error starts with (`--device 'cuda:7': ...` -> device), else None."""
    from sidestep.config import field_flags

    flag = message.split(" ", 1)[0].rstrip(":")
    return next((f.name for f in Config.fields() if flag in field_flags(f)), None)


def run_reviewed(session: Session, form: Form, answers: dict, build: Callable[[dict], Config], command_of:
                 Callable[[dict], str], action: str, run: Callable[[Config], Any], offer_preset: bool = False) -> Any:
    """Review, then run; an error that names an option found only when running (a device not on this machine,
    a model that does not load) goes back to that question with every other answer kept.
    Returns (config, what `run` returned), or None when cancelled."""
    form.validate = combination_check(build)
    while True:
        config = review(session, form, answers, build, command_of, action, offer_preset)
        if config is None:
            return None
        try:
            return config, run(config)
        except SidestepError as err:
            key = field_of_error(str(err))
            if key is None or not form.revisit(key):
                raise
            session.prompter.say(f"error: {err}", "red")
            session.prompter.say("Back to that question; every other answer is kept.", "yellow")


def _offer_preset(session: Session, config: Config) -> None:
    q = Question("_save", "Save these settings as a preset? Name (Enter to skip)",
                 check=lambda name, _: _preset_name_problem(name) if name else None)
    name = session.prompter.ask(q, "", {})
    if name:
        path = preset_store.save_preset(name, config, folder=preset_store.global_dir())
        session.prompter.say(f"  Preset saved to {path}", "green")


def _preset_name_problem(name: str) -> str | None:
    try:
        preset_store.check_name(name)
    except SidestepError as err:
        return str(err)
    return "that is a built-in preset name (read-only); choose another" if name in preset_store.BUILTIN_NAMES \
        else None


# -- the flows ----------------------------------------------------------------------------------------------------

def _setup_questions(session: Session, extra: list[Question]) -> Step:
    """The saved wizard mode is not asked again: it is said, with where to change it."""
    session.prompter.say(f"Wizard mode: {session.settings.mode} (change it in Settings).", "dim")
    return Step("Setup", extra)


def _form(session: Session, steps: list[Step], defaults: Any, seed: dict | None = None) -> tuple[Form, dict]:
    """The form and its first answers: the saved mode, and what the flow before already knows (not asked)."""
    form = Form(session.prompter, steps, defaults)
    form.given = set(seed or {})
    return form, {"_level": session.settings.mode, **(seed or {})}


def _preset_question() -> Question:
    found, _ = preset_store.list_presets()
    labels = {"none": "None: start from the defaults"}
    for p in found:
        source = "" if p.source == "built-in" else f" ({p.source})"
        labels[p.name] = f"{p.name}{source}: {p.description}" if p.description else f"{p.name}{source}"
    return Question("_preset", "Start from a preset", choices=tuple(labels), labels=labels)


def _unused(path: Path) -> str:
    """`path`, or `path_2`, `path_3`, ... : a suggested output folder never overwrites an earlier run."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}_{n}")
    return str(candidate)


class _Defaults:
    """Default answers: the chosen preset over the Config defaults, plus the saved settings."""

    def __init__(self, session: Session, adapter: str | None = None):
        self.session, self.adapter = session, adapter
        self._presets: dict[str, Config] = {}

    def base(self, answers: dict) -> Config:
        name = answers.get("_preset", "none")
        if name in (None, "none"):
            return Config()
        if name not in self._presets:
            self._presets[name] = preset_store.find_preset(name).config()
        return self._presets[name]

    def output_root(self) -> Path:
        return Path(self.session.settings.output_root).expanduser().resolve()

    def __call__(self, key: str, answers: dict) -> Any:
        if key == "checkpoint_dir":
            return self.base(answers).checkpoint_dir or self.session.settings.checkpoint_dir
        if key == "output_dir":
            variant = answers.get("model_variant", "model")
            return self.base(answers).output_dir or \
                _unused(self.output_root() / f"{_adapter(answers)}_{Path(variant).name}")
        if key == "output" and self.base(answers).output == "module_config.json":  # not the current folder
            return _unused(self.output_root() / "module_config.json")
        if key == "dataset_json" and self.base(answers).dataset_json is None and answers.get("audio_dir"):
            found = Path(answers["audio_dir"]) / "dataset.json"  # the usual place: offered, not assumed
            return str(found) if found.is_file() else None
        if key == "tensor_output" and self.base(answers).tensor_output is None and answers.get("audio_dir"):
            return _unused(self.output_root() / f"{Path(answers['audio_dir']).name}_tensors")
        if key == "dataset_dir" and self.base(answers).dataset_dir is None:
            return self.session.recent.get("dataset_dir")
        if key == "base_model" and self.base(answers).base_model is None:
            entry = _model_entry(answers)  # the name may tell the variant even when the config has no timesteps
            return entry.base_variant if entry is not None else None
        for alpha, rank in (("alpha", "rank"), ("lokr_linear_alpha", "lokr_linear_dim")):
            # the alpha follows a rank the user changed (2 x rank) until the user sets the alpha
            if key == alpha and rank in answers and answers[rank] != getattr(self.base(answers), rank):
                return 2 * answers[rank]
        if key.startswith("_"):
            return {"_level": self.session.settings.mode, "_preset": "none", "_mode": "fixed"}.get(key)
        return getattr(self.base(answers), key)


MAX_PLAUSIBLE_RANK = 256
MAX_PLAUSIBLE_ADAMW_LR = 1e-2


def _rank_warning(value: int, answers: dict) -> str | None:
    if value > MAX_PLAUSIBLE_RANK:
        return (f"{value} is far above the usual 16-64 (more than {MAX_PLAUSIBLE_RANK} rarely helps and needs much "
                "more memory)")
    return None


def _lr_warning(value: float, answers: dict) -> str | None:
    optimizer = answers.get("optimizer_type", "adamw")
    if optimizer in ("adamw", "adamw8bit") and value > MAX_PLAUSIBLE_ADAMW_LR:
        return f"{value:g} is very high for AdamW (1e-4 is typical; above {MAX_PLAUSIBLE_ADAMW_LR:g} the sound " \
               "usually breaks)"
    return None


def planned_steps(answers: dict, config: Config | None = None) -> int | None:
    """Optimizer steps of the run, from the dataset's size (None while it is unknown)."""
    import math

    def get(key: str) -> Any:
        return getattr(config, key) if config is not None else answers.get(key, _field_default(CONFIG_FIELDS[key]))

    folder = get("dataset_dir")
    try:
        songs = json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8"))["num_samples"]
    except (TypeError, OSError, ValueError, KeyError):
        return None
    if not isinstance(songs, int) or songs < 1:
        return None
    batches = math.ceil(songs / get("batch_size"))
    return max(batches // get("gradient_accumulation"), 1) * get("epochs")


def _warmup_warning(value: int, answers: dict) -> str | None:
    steps = planned_steps(answers)
    if steps is not None and value > steps:
        return f"{value} warm-up steps is longer than the whole run ({steps} optimizer steps): it never reaches " \
               "the full learning rate"
    return None


def _training_tweaks(command_of: Callable[[dict], str]) -> dict[str, dict[str, Any]]:
    preprocess_first = lambda a: bool(a.get("preprocess"))  # noqa: E731
    tweaks: dict[str, dict[str, Any]] = {
        "checkpoint_dir": {"check": _check_checkpoints},
        "model_variant": {"asker": pick_model, "auto": lambda a: _only_model(a) is not None},
        # Asked in basic mode too, but only when the model's config.json cannot answer it.
        "base_model": {"when": needs_base_model, "optional": False, "basic": True},
        "dataset_dir": {"when": lambda a: not a.get("preprocess"), "check": _check_dataset,
                        "asker": _dataset_asker(command_of)},
        "audio_dir": {"check": _check_songs, "after": _songs_note}, "dataset_json": {"check": _check_file},
        "resume_from": {"check": _check_dir}, "module_config": {"check": _check_file},
        "rank": {"warn": _rank_warning}, "lokr_linear_dim": {"warn": _rank_warning},
        "learning_rate": {"warn": _lr_warning}, "warmup_steps": {"warn": _warmup_warning},
    }
    for name, kinds in option_owners().items():  # a kind's own options: asked only for that kind
        tweaks.setdefault(name, {})["when"] = lambda a, kinds=kinds: _adapter(a) in kinds
    for name in PREPROCESS_FIRST:
        tweaks.setdefault(name, {})["when"] = preprocess_first
    return tweaks


def _build(form: Form, defaults: _Defaults, fixed: dict[str, Any]) -> Callable[[dict], Config]:
    def build(answers: dict) -> Config:
        values = {k: v for k, v in form.answered(answers).items() if k in CONFIG_FIELDS}
        if answers.get("preprocess") and "preprocess" not in values:  # accepted when songs came as tensors
            values["preprocess"] = True
        return defaults.base(answers).replace(**values, **fixed)

    return build


def interrupted_checkpoint(output_dir: Path) -> Path | None:
    """The last Ctrl-C checkpoint (`checkpoints/step_N`) of a run whose final adapter was not written after it."""
    from sidestep.train.checkpoints import RUN_FILE

    steps = [p for p in (output_dir / "checkpoints").glob("step_*")
             if p.name[5:].isdigit() and (p / "training_state.pt").is_file() and (p / RUN_FILE).is_file()]
    if not steps:
        return None
    last = max(steps, key=lambda p: int(p.name[5:]))
    final = output_dir / RUN_FILE
    return last if not final.is_file() or final.stat().st_mtime < last.stat().st_mtime else None


def _interrupted_runs(session: Session) -> list[Path]:
    """Ctrl-C checkpoints of this session's last run and of the runs under the output folder."""
    folders = [Path(session.recent["output_dir"])] if session.recent.get("output_dir") else []
    root = Path(session.settings.output_root)
    if root.is_dir():
        folders += sorted(p for p in root.iterdir() if p.is_dir())
    found = []
    for folder in folders:
        checkpoint = interrupted_checkpoint(folder)
        if checkpoint is not None and checkpoint.resolve() not in [c.resolve() for c in found]:
            found.append(checkpoint)
    return found


def offer_resume(session: Session, adapter: str | None = None) -> bool:
    """"Resume the interrupted run?" for each Ctrl-C checkpoint found; True when one was resumed."""
    from sidestep.train.checkpoints import RUN_FILE

    for checkpoint in _interrupted_runs(session):
        try:
            saved = json.loads((checkpoint / RUN_FILE).read_text(encoding="utf-8"))
            config = Config.from_dict(saved["config"], str(checkpoint / RUN_FILE)).replace(
                resume_from=str(checkpoint))
            mode = saved["training"]["mode"]
        except (OSError, ValueError, KeyError, TypeError, SidestepError):
            continue  # not ours to resume: train afresh
        if adapter is not None and config.adapter_type != adapter:
            continue
        output = checkpoint.parent.parent
        if not session.prompter.confirm(f"Resume the interrupted run in {output} (stopped at "
                                        f"{checkpoint.name.replace('_', ' ')})?"):
            return False
        session.prompter.say("Same run from the command line:", "dim")
        session.prompter.console.print(cli_line(config, mode), markup=False, highlight=False, soft_wrap=True)
        execute(session, mode, config)
        return True
    return False


def train_flow(session: Session, adapter: str, seed: dict[str, Any] | None = None) -> None:
    """Train a LoRA or a LoKR: corrected/vanilla, basic/advanced, optional preset, then the options."""
    if seed is None and offer_resume(session, adapter):
        return
    command_of = lambda a: a.get("_mode", "fixed")  # noqa: E731
    mode = Question("_mode", "Training type", choices=("fixed", "vanilla"), labels=MODE_LABELS)
    steps = [_setup_questions(session, [mode]), Step("Preset", [_preset_question()]),
             *config_steps(command_of, skip=("adapter_type", "demo_dir"), tweaks=_training_tweaks(command_of),
                           first=PREPROCESS_STEP)]
    _run_training(session, steps, command_of, {"adapter_type": adapter}, seed)


def other_kind_flow(session: Session) -> None:
    """Every registered kind but the first (LoRA, which has its own menu entry): pick one, then train it."""
    choices = adapter_choices()[1:]
    train_flow(session, session.prompter.choose("Adapter kind", choices, choices[0][0]))


def selective_flow(session: Session, seed: dict[str, Any] | None = None) -> None:
    command_of = lambda a: "selective"  # noqa: E731
    steps = [_setup_questions(session, []), Step("Preset", [_preset_question()]),
             *config_steps(command_of, skip=("demo_dir",), tweaks=_training_tweaks(command_of),
                           first=PREPROCESS_STEP)]
    _run_training(session, steps, command_of, {}, seed)


def _run_training(session: Session, steps: list[Step], command_of, fixed: dict, seed: dict | None) -> None:
    defaults = _Defaults(session)
    form, answers = _form(session, steps, defaults, seed)
    answers.update(fixed)
    session.prompter.say("Type b to go back, ? for help, Ctrl-C to return to the main menu.", "dim")

    def run(config: Config) -> int:
        _note_preset_adapter(session, answers, defaults, fixed)
        return execute(session, command_of(answers), config)

    done = run_reviewed(session, form, answers, _build(form, defaults, fixed), command_of, "training", run, True)
    if done is not None and done[1] == 0:
        _offer_generate(session, done[0])


def _offer_generate(session: Session, config: Config) -> None:
    """After training: hear the adapter right away (train.py generate on the output folder)."""
    try:
        if not session.prompter.confirm("Generate a short song with the new adapter?", default=False):
            return
    except GoBack:
        return
    generate_flow(session, {"checkpoint_dir": config.checkpoint_dir, "model_variant": config.model_variant,
                            "device": config.device, "adapter": config.output_dir})


def _players() -> list[str]:
    import shutil

    return [p for p in ("afplay", "paplay", "aplay", "ffplay", "xdg-open") if shutil.which(p)]


def _generate_problem(rule: Callable[[Any], str | None]) -> Callable[[Any, dict], str | None]:
    return lambda value, _: rule(value)


def generate_flow(session: Session, seed: dict[str, Any] | None = None) -> None:
    """Generate: a song from a prompt, with an adapter (prefilled with its trigger tag) or the base model."""
    from sidestep.cli import generate_cmd as gen

    seed = dict(seed or {})
    last = seed.get("adapter") or session.recent.get("output_dir")
    known = lambda key: key not in seed  # noqa: E731 (carried over from the flow before: not asked again)

    def trigger(answers: dict) -> str | None:
        return gen.trigger_tag(Path(answers["adapter"])) if answers.get("adapter") else None

    def out_default(answers: dict) -> str:
        folder = Path(answers["adapter"]) if answers.get("adapter") else Path(session.settings.output_root)
        return _unused(folder / "generated.wav")

    fields = {name: CONFIG_FIELDS[name] for name in ("checkpoint_dir", "model_variant")}
    steps = [Step("Model", [
        Question("checkpoint_dir", f"checkpoint-dir: {fields['checkpoint_dir'].metadata['help']}", path=True,
                 check=_check_checkpoints, help=HELP.get("checkpoint_dir", ""), when=lambda a: known("checkpoint_dir")),
        Question("model_variant", "Model", asker=pick_model,
                 when=lambda a: known("model_variant") and len(_models(a["checkpoint_dir"])) > 1),
        Question("adapter", "Adapter folder (a training output folder; '-' for none: the base model plays)",
                 optional=True, path=True, check=_generate_problem(gen.adapter_problem),
                 when=lambda a: known("adapter"),
                 help="The folder a training run wrote (adapter files + sidestep_run.json); without one you hear "
                      "the base model, which is useful to compare.")]),
        Step("Song", [
            Question("prompt", "Prompt (style, genre, instruments)", check=_generate_problem(gen.prompt_problem),
                     help="A caption like those in your dataset, e.g. 'lofi hip hop, warm piano, vinyl crackle'; "
                          "keep the adapter's trigger tag in it to call up what it learned."),
            Question("duration", "Seconds of audio", kind=float, check=_generate_problem(gen.duration_problem),
                     help="10-30 s is enough to judge an adapter; longer takes proportionally longer."),
            Question("out", "Write the song to (a .wav file)", path=True, check=_generate_problem(gen.out_problem))])]

    def default_for(key: str, answers: dict) -> Any:
        if key == "checkpoint_dir":
            return session.settings.checkpoint_dir
        if key == "model_variant":
            return "turbo"
        if key == "adapter":
            return last
        if key == "prompt":
            tag = trigger(answers)
            return f"{tag}, " if tag else None
        if key == "duration":
            return 20.0
        return out_default(answers)

    answers = dict(seed)
    form = Form(session.prompter, steps, default_for)
    while True:
        form.run(answers)
        tag = trigger(answers)
        if tag and tag.lower() not in answers["prompt"].lower():
            session.prompter.say(f"  note: the adapter's trigger tag '{tag}' is not in the prompt", "yellow")
        if answers.get("model_variant") is None:  # one model only: nothing to choose
            answers["model_variant"] = variant_name(_models(answers["checkpoint_dir"])[0])
        config = Config(checkpoint_dir=answers["checkpoint_dir"], model_variant=answers["model_variant"],
                        device=answers.get("device", "auto"))
        try:
            if session.prompter.confirm("Generate?"):
                break
            return
        except GoBack:
            form.back()
    out = str(Path(answers["out"]).resolve())
    execute(session, "generate", config, gen_prompt=answers["prompt"], gen_lyrics=None,
            gen_duration=answers["duration"], gen_adapter=answers.get("adapter"), gen_strength=1.0, gen_out=out,
            gen_steps=None, gen_shift=None, gen_guidance=None)
    if session.dry_run is not None or not Path(out).is_file():
        return
    # a path is never broken into lines: it can be copied whole at any width
    session.prompter.console.print(f"The song: {out}", markup=False, highlight=False, soft_wrap=True)
    players = _players()
    try:
        if players and session.prompter.confirm(f"Play it ({players[0]})?", default=False):
            import subprocess

            subprocess.run([players[0], out], check=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    except GoBack:
        return


def _note_preset_adapter(session: Session, answers: dict, defaults: _Defaults, fixed: dict) -> None:
    preset_adapter = defaults.base(answers).adapter_type
    if "adapter_type" in fixed and preset_adapter != fixed["adapter_type"]:
        session.prompter.say(f"Note: preset '{answers['_preset']}' stores adapter {preset_adapter}; training a "
                             f"{fixed['adapter_type']} as chosen in the menu.", "yellow")


def preprocess_flow(session: Session) -> None:
    """Songs -> tensors; afterwards, offer to train on them (flow chaining)."""
    command_of = lambda a: "preprocess"  # noqa: E731
    tweaks = _training_tweaks(command_of)
    for name in PREPROCESS_FIRST:
        tweaks[name].pop("when")  # here they are the point, not a --preprocess branch
    tweaks["base_model"]["when"] = lambda a: False  # preprocessing does not sample timesteps
    steps = [_setup_questions(session, []), *config_steps(command_of, skip=("demo_dir",), tweaks=tweaks)]
    defaults = _Defaults(session)
    form, answers = _form(session, steps, defaults)
    session.prompter.say("Type b to go back, ? for help, Ctrl-C to return to the main menu.", "dim")
    done = run_reviewed(session, form, answers, _build(form, defaults, {}), command_of, "preprocessing",
                        lambda config: execute(session, "preprocess", config))
    if done is not None:
        _offer_training(session, done[0])


def _offer_training(session: Session, config: Config) -> None:
    prompter = session.prompter
    prompter.say(f"Tensors are in {config.tensor_output}.", "green")
    try:
        if not prompter.confirm("Train on them now?"):
            return
        adapter = prompter.choose("Adapter", adapter_choices(), "lora")
    except GoBack:
        return
    seed = {"checkpoint_dir": config.checkpoint_dir, "model_variant": config.model_variant,
            "dataset_dir": config.tensor_output}
    train_flow(session, adapter, seed)


def estimate_flow(session: Session) -> None:
    command_of = lambda a: "estimate"  # noqa: E731
    steps = [_setup_questions(session, []),
             *config_steps(command_of, skip=("demo_dir",), tweaks=_training_tweaks(command_of))]
    defaults = _Defaults(session)
    form, answers = _form(session, steps, defaults)
    done = run_reviewed(session, form, answers, _build(form, defaults, {}), command_of, "the estimate",
                        lambda config: execute(session, "estimate", config))
    if done is None:
        return
    config = done[0]
    try:
        if session.prompter.confirm(f"Train selectively on {config.output} now?", default=False):
            selective_flow(session, {"checkpoint_dir": config.checkpoint_dir, "model_variant": config.model_variant,
                                     "dataset_dir": config.dataset_dir, "module_config": config.output})
    except GoBack:
        return


def compare_flow(session: Session) -> None:
    def check(paths: list[str], _: dict) -> str | None:
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            return f"{missing[0]}: file not found"
        return None if len(paths) >= 2 else "give at least two module config JSON files"

    q = Question("configs", "Module config JSON files (two or more, separated by spaces)", kind=list, check=check)
    paths = [os.path.expanduser(p) for p in session.prompter.ask(q, None, {})]
    execute(session, "compare-configs", Config(), configs=paths)


def experimental_menu(session: Session) -> None:
    """Estimate / selective / compare configs; each is the CLI subcommand of that name."""
    options = [("estimate", "Estimate: rank attention modules by gradient sensitivity on your data"),
               ("selective", "Selective: corrected training on the top-k modules of a module config"),
               ("compare", "Compare configs: overlap and rank correlation of module configs"),
               ("back", "Back to the main menu")]
    session.prompter.header("Experimental")
    choice = session.prompter.choose("Which tool?", options, "estimate")
    flows = {"estimate": estimate_flow, "selective": selective_flow, "compare": compare_flow}
    if choice in flows:
        flows[choice](session)

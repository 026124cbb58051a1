"""`python train.py` with no arguments: the session loop.

The main menu comes back after every action. Ctrl-C at a prompt (or `b` at a flow's first
question) returns to it; a user-facing error is printed on one line and returns to it too.
Models are dropped and the CUDA cache emptied after each action.
"""

from __future__ import annotations

import gc
import logging
import sys
import warnings
from pathlib import Path

from rich.padding import Padding
from rich.table import Table

from sidestep import __version__
from sidestep import presets as preset_store
from sidestep.adapters import KINDS
from sidestep.console import get_console
from sidestep.errors import SidestepError
from sidestep.settings import MODES, Settings, check_checkpoint_dir, load_settings, save_settings, settings_path
from sidestep.wizard import flows
from sidestep.wizard.dataset_flow import dataset_flow
from sidestep.wizard.prompts import Form, GoBack, Prompter, Question, Step

log = logging.getLogger("sidestep.wizard")

BANNER = r"""
  ███████ ██ ██████  ███████       ███████ ████████ ███████ ██████
  ██      ██ ██   ██ ██            ██         ██    ██      ██   ██
  ███████ ██ ██   ██ █████   █████ ███████    ██    █████   ██████
       ██ ██ ██   ██ ██                 ██    ██    ██      ██
  ███████ ██ ██████  ███████       ███████    ██    ███████ ██"""
MENU = [("lora", "Train a LoRA"),
        ("other_kind", "Train another adapter kind: " + ", ".join(k.label for k in list(KINDS.values())[1:])),
        ("dataset", "Build a dataset JSON (captions, lyrics, BPM, key) from a folder of songs"),
        ("preprocess", "Preprocess audio into training tensors"),
        ("generate", "Generate a song (with an adapter, or the base model)"),
        ("experimental", "Experimental: estimate / selective / compare configs"),
        ("presets", "Presets"),
        ("settings", "Settings"),
        ("quit", "Quit")]


def banner(prompter: Prompter) -> None:
    console = prompter.console
    if not prompter.plain and console.width >= 72:
        prompter.say(BANNER, "bold magenta")
    prompter.say(f"  Side-Step {__version__}: LoRA, DoRA, LoKR, LoHA, OFT fine-tuning for ACE-Step 1.5", "bold")
    prompter.say("  At any prompt: b = back, ? = help, Ctrl-C = back to the main menu.", "dim")


def release_memory() -> None:
    """Drop what the last action left (models hold GBs) and hand cached CUDA blocks back to the driver."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:  # nothing was loaded: do not pay torch's import for nothing
        return
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    # Weightless modules (transformers' activation singletons) live forever and cost nothing: count the rest.
    with warnings.catch_warnings():  # isinstance() on deprecated torch objects warns
        warnings.simplefilter("ignore")
        weighted = sum(1 for obj in gc.get_objects()
                       if issubclass(type(obj), torch.nn.Module)  # type(): isinstance() on a dead weakref.proxy
                       and next(obj.parameters(recurse=False), None) is not None)  # (librosa leaves some) raises
    cuda = torch.cuda.memory_allocated() / 2**20 if torch.cuda.is_initialized() else 0.0
    log.info("memory after action: %d live modules with weights, %.1f MiB CUDA allocated", weighted, cuda)


# -- first run and settings --------------------------------------------------------------------------------------

def _settings_steps(settings: Settings) -> list[Step]:
    root = Question("checkpoint_dir", "Checkpoint folder (holds acestep-v15-turbo/, vae/, Qwen3-Embedding-0.6B/)",
                    path=True, check=lambda value, _: check_checkpoint_dir(value))
    out = Question("output_root", "Folder trained adapters go under", path=True)
    mode = Question("mode", "Default wizard mode", choices=MODES, labels=flows.LEVEL_LABELS)
    return [Step("Checkpoints", [root]), Step("Outputs", [out]), Step("Wizard mode", [mode])]


def _show_models(prompter: Prompter, root: str) -> None:
    models = flows._models(root)
    prompter.say(f"  Found {len(models)} model(s): " + ", ".join(f"{m.name} ({m.label})" for m in models), "green")


def first_run(prompter: Prompter) -> Settings:
    """Walk through the checkpoint folder (validated by discovery), outputs and mode; save settings.json."""
    prompter.header("First-time setup")
    prompter.say("Side-Step needs the ACE-Step 1.5 checkpoints folder. Ctrl-C skips setup (asked again next time).")
    defaults = Settings(checkpoint_dir="./checkpoints")
    answers = Form(prompter, _settings_steps(defaults), lambda key, _: getattr(defaults, key)).run({})
    # Absolute, so sessions started from another folder find the checkpoints too.
    settings = Settings(**{**answers, "checkpoint_dir": str(Path(answers["checkpoint_dir"]).resolve()),
                           "output_root": str(Path(answers["output_root"]).resolve())})
    _show_models(prompter, settings.checkpoint_dir)
    path = save_settings(settings)
    prompter.say(f"Settings saved to {path}", "green")
    return settings


def load_or_setup(prompter: Prompter) -> Settings:
    try:
        settings = load_settings()
    except SidestepError as err:
        prompter.say(f"error: {err}", "red")
        settings = None
    if settings is not None:
        return settings
    try:
        return first_run(prompter)
    except (KeyboardInterrupt, GoBack):
        prompter.say("\nSetup skipped; nothing saved. Settings are in the main menu.", "yellow")
        return Settings()


def settings_menu(session: flows.Session) -> None:
    prompter = session.prompter
    while True:
        s = session.settings
        table = session.table("Settings", header=False)
        for key, value in s.to_dict().items():
            table.add_row(key.replace("_", " "), str(value))
        prompter.console.print(table)
        prompter.say(f"  Saved in {settings_path()}; used as defaults by every flow.", "dim")
        choice = prompter.choose("What would you like to change?", [("checkpoint_dir", "Change the checkpoint folder"),
                                              ("output_root", "Change the output folder"),
                                              ("mode", "Change the default wizard mode"),
                                              ("back", "Back to the main menu")], "back")
        if choice == "back":
            return
        _edit_setting(session, choice)


def _edit_setting(session: flows.Session, key: str) -> None:
    step = next(st for st in _settings_steps(session.settings) if st.questions[0].key == key)
    try:
        value = session.prompter.ask(step.questions[0], getattr(session.settings, key), {})
    except GoBack:
        return
    if key in ("checkpoint_dir", "output_root"):  # absolute: the same folder from wherever the wizard starts
        value = str(Path(value).resolve())
    session.settings = Settings(**{**session.settings.to_dict(), key: value})
    if key == "checkpoint_dir":
        _show_models(session.prompter, value)
    path = save_settings(session.settings)
    session.prompter.say(f"Saved to {path}", "green")


# -- presets ------------------------------------------------------------------------------------------------------

def presets_table(session: flows.Session) -> None:
    found, errors = preset_store.list_presets()
    # No borders and short columns: the table must fit 80 columns.
    table = Table(box=None, pad_edge=False, header_style=None if session.plain else "bold")
    for col in ("name", "adapter", "rank", "epochs", "batch", "accum", "optimizer", "offload"):
        table.add_column(col, no_wrap=True)
    for p in found:
        c = p.config()
        rank = getattr(c, KINDS[c.adapter_type].options[0])  # each kind lists its size option first
        name = p.name if p.source == "built-in" else f"{p.name} *"
        table.add_row(name, c.adapter_type, str(rank), str(c.epochs), str(c.batch_size),
                      str(c.gradient_accumulation), c.optimizer_type, "yes" if c.offload_encoder else "no")
    session.prompter.say()
    session.prompter.console.print(Padding(table, (0, 0, 0, 4), expand=False))
    session.prompter.say(f"    * your presets (saved in {preset_store.global_dir()}; ./presets/ is read too); "
                         "descriptions: Show a preset", "dim")
    for err in errors:
        session.prompter.say(f"skipped: {err}", "red")


def _pick_preset(session: flows.Session, user_only: bool = False) -> str:
    found, _ = preset_store.list_presets()
    found = [p for p in found if p.source != "built-in"] if user_only else found
    if not found:
        raise SidestepError("no user presets yet; save one at the end of a training setup, or import one")
    return session.prompter.choose("Preset", [(p.name, f"{p.name} ({p.source})") for p in found], found[0].name)


def _show_preset(session: flows.Session) -> None:
    preset = preset_store.find_preset(_pick_preset(session))
    session.prompter.say(f"{preset.name} ({preset.source}, {preset.path}): {preset.description}")
    table = session.table(header=False)
    for key, value in preset.values.items():
        table.add_row(key, str(value))
    session.prompter.console.print(table)


def _import_preset(session: flows.Session) -> None:
    q = Question("file", "Preset JSON file to import", path=True,
                 check=lambda value, _: None if Path(value).is_file() else f"{value}: file not found")
    path = preset_store.import_preset(Path(session.prompter.ask(q, None, {})), folder=preset_store.global_dir())
    session.prompter.say(f"Imported to {path}", "green")


def _export_preset(session: flows.Session) -> None:
    name = _pick_preset(session)
    q = Question("dest", "Export to (a file, or a folder)", path=True)
    path = preset_store.export_preset(name, Path(session.prompter.ask(q, ".", {})))
    session.prompter.say(f"Exported to {path}", "green")


def _delete_preset(session: flows.Session) -> None:
    name = _pick_preset(session, user_only=True)
    if session.prompter.confirm(f"Delete preset '{name}'?", default=False):
        session.prompter.say(f"Deleted {preset_store.delete_preset(name)}", "green")


def presets_menu(session: flows.Session) -> None:
    actions = {"list": lambda s: presets_table(s), "show": _show_preset, "import": _import_preset,
               "export": _export_preset, "delete": _delete_preset}
    options = [("list", "List presets"), ("show", "Show a preset's settings"), ("import", "Import a preset file"),
               ("export", "Export a preset to a file"), ("delete", "Delete a user preset"),
               ("back", "Back to the main menu")]
    while True:
        session.prompter.header("Presets")
        session.prompter.say("  (Save one at the end of a training setup.)", "dim")
        choice = session.prompter.choose("What would you like to do?", options, "list")
        if choice == "back":
            return
        try:
            actions[choice](session)
        except GoBack:
            continue
        except SidestepError as err:
            session.prompter.say(f"error: {err}", "red")


# -- the session loop ---------------------------------------------------------------------------------------------

ACTIONS = {
    "lora": lambda s: flows.train_flow(s, "lora"),
    "other_kind": flows.other_kind_flow,
    "dataset": dataset_flow,
    "preprocess": flows.preprocess_flow,
    "generate": flows.generate_flow,
    "experimental": flows.experimental_menu,
    "presets": presets_menu,
    "settings": settings_menu,
}


def run_action(session: flows.Session, choice: str) -> None:
    """One menu action; whatever happens, the menu comes back with memory released."""
    try:
        ACTIONS[choice](session)
    except GoBack:
        pass  # `b` at a flow's first question: back to the menu
    except KeyboardInterrupt:
        session.prompter.say("\nCancelled; back to the main menu.", "yellow")
    except EOFError:  # input ended: the session is over, not an error
        raise
    except SidestepError as err:
        log.error("%s", err, exc_info=True)
        calm = err.exit_code == 130  # Ctrl-C in training: a stop that was asked for, with its resume command
        # soft_wrap: never broken into lines, so the resume command survives copy-paste at any width
        session.prompter.console.print(str(err) if calm else f"error: {err}", markup=False, highlight=False,
                                       soft_wrap=True if calm else None)
    except Exception as err:  # our bug: keep the trace in the log, keep the session alive
        log.exception("unexpected error in the wizard")
        session.prompter.console.print(f"error: unexpected {type(err).__name__}: {err} (full traceback in "
                                       "sidestep.log)", markup=False, highlight=False)
    finally:
        release_memory()


def run_wizard(plain: bool = False) -> int:
    """The guided wizard; returns the exit code (0 on Quit, Ctrl-C at the main menu or end of input)."""
    prompter = Prompter(get_console(plain=plain), plain=plain or not sys.stdout.isatty())
    banner(prompter)
    try:
        session = flows.Session(prompter, load_or_setup(prompter), plain=prompter.plain)
        while True:
            prompter.header("Main menu")
            try:
                choice = prompter.choose("What would you like to do?", MENU, "lora")
            except GoBack:
                continue
            if choice == "quit":
                break
            run_action(session, choice)
    except (EOFError, KeyboardInterrupt):  # input ended, or Ctrl-C at the main menu itself
        prompter.say("")
    prompter.say("Bye.")
    return 0

"""The wizard, driven through a pseudo-terminal: it fills the same Config the CLI parses (issue 8).

Most flows run with the SIDESTEP_WIZARD_DRY_RUN seam (the action is recorded as JSON instead of
run); one test trains for real on the tiny checkpoint, and interrupts a second run with Ctrl-C.
"""

import io
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import write_tensor_dataset
from sidestep.adapters import option_owners
from sidestep.config import Config
from wizard_pty import TRAIN_PY, WRAPPED, Wizard, main_menu, pick_kind, quit_wizard, wizard_env, write_settings


@pytest.fixture
def env(tmp_path, tiny_root_readonly):
    """A home with settings pointing at the tiny checkpoints, a dataset, and a dry-run record file."""
    home = tmp_path / "home"
    write_settings(home, tiny_root_readonly)
    write_tensor_dataset(tmp_path / "data", n=1)
    return wizard_env(home, SIDESTEP_WIZARD_DRY_RUN=str(tmp_path / "dry.jsonl"))


@pytest.fixture
def wizard(tmp_path, env):
    started = []

    def start(*args: str, cols: int = 200, rows: int = 50, environ: dict | None = None) -> Wizard:
        started.append(Wizard(tmp_path, environ or env, args, cols, rows))
        return started[-1]

    yield start
    for w in started:
        w.close()


def recorded(tmp_path) -> list[dict]:
    path = tmp_path / "dry.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def cli_config(argv: list[str], cwd: Path, monkeypatch) -> Config:
    """What the CLI parses for `argv` (run from `cwd`, where ./presets/ is looked up)."""
    from sidestep.cli.commands import commands
    from sidestep.cli.parser import build_parser, config_from_args

    monkeypatch.chdir(cwd)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(cwd / "home" / "xdg"))  # the wizard's config folder
    return config_from_args(build_parser(commands()).parse_args(argv))


def setup_answers(w: Wizard, mode: str = "", preset: str = "", level: str = "basic") -> None:
    w.expect(rf"Wizard mode: {level} \(change it in Settings\)\.")  # saved: said, not asked again
    w.answer(r"Training type:\n(?:.*\n)*  Choose 1-2 \[1\]: $", mode)
    w.answer(r"Start from a preset:\n(?:.*\n)*  Choose 1-\d+ \[1\]: $", preset)


def finish(w: Wizard, save_as: str = "", start: str = "y", command: str = "fixed", before: str = "",
           generate: tuple[str, ...] = ()) -> None:
    """Save-as-preset, start, the (dry-run) execution, then the offer to generate with the new adapter."""
    w.answer(r"Save these settings as a preset\? Name \(Enter to skip\): $", save_as)
    w.answer(r"Start training\? \[Y/n\]: $", start)
    if start not in ("", "y") or not command:
        return
    if before:
        w.expect(before)
    w.expect(rf"dry run: recorded '{command}'")
    w.answer(r"Generate a short song with the new adapter\? \[y/N\]: $", "y" if generate else "")
    if generate:
        w.answer(r"Prompt \(style, genre, instruments\) \[zxq, \]: $", generate[0])  # its trigger tag prefilled
        w.answer(r"Seconds of audio \[20\.0\]: $", "-3")
        w.answer(r"-3: must be more than 0 and at most 600 seconds\n  Seconds of audio \[20\.0\]: $", generate[1])
        w.answer(r"Write the song to \(a \.wav file\) \[[^\n]*generated\.wav\]: $", "")
        w.answer(r"Generate\? \[Y/n\]: $", "")
        w.expect(r"dry run: recorded 'generate'")


def basic_lora_with_go_back(w: Wizard, tmp_path: Path, root: Path) -> None:
    main_menu(w, "1")
    setup_answers(w)
    w.expect(r"\[Step 3/6\] Model and paths")
    w.answer(r"checkpoint-dir: [^\n]*\[" + str(root) + r"\]: $", "")  # default from settings.json
    w.expect(r"1\. +acestep-v15-base +official +base: base *\n +2\. +acestep-v15-turbo +official")
    w.answer(r"Model: number, or text to search \[acestep-v15-turbo\]: $", "bas")  # search by part of the name
    w.expect(r"-> acestep-v15-base \(official, base: base\)")
    w.answer(r"dataset-dir: [^\n]*: $", str(tmp_path / "data"))
    w.expect(r"\[Step 4/6\] LoRA settings")
    w.answer(r"rank: LoRA rank \[64\]: $", "?")
    w.expect(r"How much the adapter can learn: 16-64 is typical; higher")  # `?`: what it does, plainly
    w.answer(r"rank: LoRA rank \[64\]: $", "0")
    w.answer(r"must be in \[1, inf\), got 0\n  rank: LoRA rank \[64\]: $", "100000")
    w.answer(r"100000 is far above the usual 16-64[^\n]*\n  Keep it\? \[y/N\]: $", "")  # implausible: confirm
    w.answer(r"rank: LoRA rank \[64\]: $", "8")
    w.answer(r"alpha: [^\n]*\[16\]: $", "b")  # the alpha follows the rank (2 x rank); go back
    w.answer(r"rank: LoRA rank \[8\]: $", "16")  # the earlier answer is the default
    w.answer(r"alpha: [^\n]*\[32\]: $", "")
    w.expect(r"\[Step 5/6\] Training settings")
    w.answer(r"learning-rate: Learning rate \[0\.0001\]: $", "5")  # no "(1.0 for prodigy)": not asked here
    w.answer(r"5 is very high for AdamW[^\n]*\n  Keep it\? \[y/N\]: $", "n")
    assert w.fill({"learning-rate": "5e-4", "epochs": "3", "output-dir": "out1"}, "Same run from the command line") \
        == ["learning-rate", "batch-size", "epochs", "output-dir"]
    w.expect(r"Note: 100 warm-up steps is longer than this run \(3 optimizer steps\)")
    # what the (dry) run would have written: an adapter trained with the trigger tag zxq
    (tmp_path / "out1").mkdir()
    (tmp_path / "out1" / "adapter_config.json").write_text("{}")
    (tmp_path / "out1" / "sidestep_run.json").write_text(json.dumps({"inference": {"trigger": "zxq"}}))
    finish(w, generate=("zxq, calm piano", "5"))


def lokr_from_a_preset(w: Wizard, tmp_path: Path) -> None:
    main_menu(w, "2")
    pick_kind(w, "2")  # LoKR
    setup_answers(w, preset="quick_test")
    asked = w.fill({"dataset-dir": str(tmp_path / "data"), "output-dir": "lokr_out"}, "Same run from the command")
    assert asked == ["checkpoint-dir", "dataset-dir", "lokr-linear-dim", "lokr-linear-alpha", "learning-rate",
                     "batch-size", "epochs", "output-dir"]
    finish(w, save_as="my_lokr", before=r"Note: preset 'quick_test' stores adapter lora; training a lokr as chosen in "
                                        r"the menu")


def root_with_a_finetune(tmp_path: Path, tiny_root: Path) -> Path:
    """The tiny root plus a custom fine-tune whose config.json cannot tell its base or its timesteps."""
    root = tmp_path / "ckpt"
    root.mkdir()
    for part in tiny_root.iterdir():
        (root / part.name).symlink_to(part)
    config = json.loads((tiny_root / "acestep-v15-base" / "config.json").read_text())
    for key in ("is_turbo", "model_version", "timestep_mu", "timestep_sigma"):
        config.pop(key)
    (root / "my-finetune").mkdir()
    (root / "my-finetune" / "config.json").write_text(json.dumps(config))
    return root


def finetune_asks_its_base(w: Wizard, tmp_path: Path, root: Path) -> None:
    main_menu(w, "1")
    setup_answers(w)
    w.answer(r"checkpoint-dir: [^\n]*: $", str(root))
    w.expect(r"3\. +my-finetune +custom +base: \?")
    w.answer(r"Model: number, or text to search \[acestep-v15-turbo\]: $", "finetune")
    w.answer(r"base-model: [^\n]*\(turbo/base/sft[^\n]*\): $", "sft")
    w.fill({"dataset-dir": str(tmp_path / "data"), "output-dir": "ft"}, "Same run from the command line")
    finish(w)


def test_basic_lora_with_go_back_then_lokr_from_a_preset_equal_cli(wizard, tmp_path, tiny_root_readonly,
                                                                    monkeypatch):
    w = wizard()
    w.expect(r"Side-Step \d+\.\d+\.\d+")
    basic_lora_with_go_back(w, tmp_path, tiny_root_readonly)
    lokr_from_a_preset(w, tmp_path)  # the session loop: the menu came back
    root = root_with_a_finetune(tmp_path, tiny_root_readonly)
    finetune_asks_its_base(w, tmp_path, root)
    quit_wizard(w)
    assert "Traceback" not in w.text
    assert w.text.count("base-model:") == 1  # only for the fine-tune whose config cannot tell

    lora, generate, lokr, finetune = recorded(tmp_path)
    assert generate["command"] == "generate" and generate["args"]["gen_adapter"] == "out1"
    assert (generate["args"]["gen_prompt"], generate["args"]["gen_duration"]) == ("zxq, calm piano", 5.0)
    assert generate["args"]["gen_out"] == str(tmp_path / "out1" / "generated.wav")
    assert Config(**finetune["config"]) == cli_config(
        ["fixed", "--checkpoint-dir", str(root), "--model-variant", "my-finetune", "--base-model", "sft",
         "--dataset-dir", str(tmp_path / "data"), "--output-dir", "ft"], tmp_path, monkeypatch)
    assert lora["command"] == "fixed" and Config(**lora["config"]) == cli_config(
        ["fixed", "--checkpoint-dir", str(tiny_root_readonly), "--model-variant", "base", "--dataset-dir",
         str(tmp_path / "data"), "--rank", "16", "--alpha", "32", "--lr", "5e-4", "--epochs", "3", "--output-dir",
         "out1"], tmp_path, monkeypatch)

    assert "[Step 4/6] LoKR settings (experimental)" in w.text
    assert "lokr-linear-dim: LoKR linear dimension (like LoRA rank) [16]" in w.text  # the preset's values
    assert "epochs: Maximum epochs [10]" in w.text
    expected = cli_config(["fixed", "--preset", "quick_test", "--adapter-type", "lokr", "--checkpoint-dir",
                           str(tiny_root_readonly), "--dataset-dir", str(tmp_path / "data"), "--output-dir",
                           "lokr_out"], tmp_path, monkeypatch)
    assert Config(**lokr["config"]) == expected and expected.epochs == 10 and expected.lokr_linear_dim == 16
    saved = json.loads((tmp_path / "home" / "xdg" / "sidestep" / "presets" / "my_lokr.json").read_text())
    assert f"Preset saved to {tmp_path / 'home' / 'xdg' / 'sidestep' / 'presets' / 'my_lokr.json'}" in w.text
    assert saved["adapter_type"] == "lokr" and saved["lokr_linear_dim"] == 16 and saved["epochs"] == 10
    assert "dataset_dir" not in saved and "checkpoint_dir" not in saved
    user = cli_config(["fixed", "--preset", "my_lokr"], tmp_path, monkeypatch)
    assert (user.adapter_type, user.lokr_linear_dim, user.epochs) == ("lokr", 16, 10)


def test_advanced_vanilla_lokr_asks_every_option_and_equals_cli(wizard, tmp_path, tiny_root_readonly, monkeypatch):
    write_settings(tmp_path / "home", tiny_root_readonly, mode="advanced")
    w = wizard()
    main_menu(w, "2")
    pick_kind(w, "2")  # LoKR
    setup_answers(w, mode="2", level="advanced")
    # refused when typed, by the CLI's own rules (device spelling, module names, nf4 with LoKR), then fixed
    retries = {"device": ["gpu", "cpu"], "target-modules": ["q_proj foo_proj", "q_proj v_proj"],
               "quantize-base": ["nf4", "none"]}
    answers = {"device": "cpu", "precision": "fp32", "attention-type": "self", "target-modules": "q_proj v_proj",
               "lokr-linear-dim": "8", "lokr-linear-alpha": "16", "lokr-factor": "4", "lokr-use-tucker": "y",
               "learning-rate": "0.001", "epochs": "7", "optimizer-type": "adafactor", "scheduler-type": "3",
               "gradient-checkpointing": "n", "num-workers": "0", "save-every": "5", "log-every": "2",
               "dataset-dir": str(tmp_path / "data"), "output-dir": str(tmp_path / "out"), "bias": "all"}
    asked = w.fill({**answers, **retries}, "Same run from the command line", model="2")
    finish(w, command="vanilla")
    quit_wizard(w)
    assert "'gpu': use auto, cuda, cuda:N, mps, xpu or cpu\n  device:" in w.text
    assert "unknown projection 'foo_proj'; use q_proj k_proj v_proj o_proj\n  target-modules:" in w.text
    assert "--quantize-base nf4 works with --adapter-type lora only" in w.text
    assert [a for a in asked if a in retries] == ["device", "device", "target-modules", "target-modules",
                                                   "quantize-base", "quantize-base"]
    asked = list(dict.fromkeys(asked))

    # advanced mode asks every vanilla option but the menu's adapter type, the other kinds' own ones, the model
    # (picked from the list), the base (only when the config cannot tell) and the --preprocess branch
    other_kinds = {name for name, kinds in option_owners().items() if "lokr" not in kinds}
    not_asked = {"adapter_type", "model_variant", "base_model", "audio_dir", "dataset_json", "tensor_output",
                 "max_duration", "vae_mode"} | other_kinds
    assert {"rank", "alpha", "dropout", "bias", "loha_linear_dim", "oft_block_size"} <= other_kinds
    expected_flags = {(f.metadata["flags"] or ("--" + f.name.replace("_", "-"),))[-1].lstrip("-")
                      for f in Config.fields() if "vanilla" in f.metadata["commands"] and f.name not in not_asked}
    assert set(asked) == expected_flags and "cfg-ratio" not in asked  # CFG dropout is corrected-mode only
    [run] = recorded(tmp_path)
    argv = ["vanilla", "--adapter-type", "lokr", "--checkpoint-dir", str(tiny_root_readonly)]
    for flag, value in answers.items():
        if flag in ("bias",):  # a LoRA option, never asked for a LoKR
            continue
        value = {"y": None, "n": None, "3": "linear"}.get(value, value)
        if flag == "gradient-checkpointing":
            argv.append("--no-gradient-checkpointing")
        elif value is None:
            argv.append(f"--{flag}")
        else:
            argv += [f"--{flag}", *value.split()]
    assert Config(**run["config"]) == cli_config(argv, tmp_path, monkeypatch)
    assert Config(**run["config"]).bias == "none"


def resume_line(w: Wizard) -> str:
    """The resume command after a calm stop: one line in the output stream (the terminal soft-wraps it)."""
    match = w.expect(r"Stopped at step (\d+) and saved to [^\n]*; resume with:\n(python train\.py fixed [^\n]*)\n",
                     timeout=60)
    return match.group(2)


@pytest.mark.parametrize("cols", [60, 120])
def test_real_training_device_error_returns_to_its_question_then_ctrl_c_stops_calmly_and_resumes(
        wizard, tmp_path, env, monkeypatch, cols):
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "tiny.json").write_text(json.dumps(
        {"description": "tiny CPU run", "rank": 4, "alpha": 8, "num_workers": 0, "gradient_accumulation": 1,
         "warmup_steps": 0, "save_every": 1000, "log_every": 1, "device": "cuda:7"}))
    env = {k: v for k, v in env.items() if k != "SIDESTEP_WIZARD_DRY_RUN"}
    w = wizard(environ=env, cols=cols)
    main_menu(w, "1")
    setup_answers(w, preset="tiny")
    w.fill({"dataset-dir": str(tmp_path / "data"), "epochs": "100000", "output-dir": "out"},
           "Same run from the command line", model="turbo")
    w.answer(r"Name \(Enter to skip\): $", "")
    w.answer(r"Start training\? \[Y/n\]: $", "")
    # found only when the model is loaded (no 8th GPU here): back to that one question, other answers kept
    w.expect(r"error: --device 'cuda:7': (.*\n)*?Back to that question; every other answer is kept")
    w.answer(rf"device: {WRAPPED}\[cuda:7\]: $", "gpu")  # checked when typed, by the CLI's own rule
    w.answer(rf"'gpu': use auto, cuda, cuda:N, mps, xpu or cpu\n  device: {WRAPPED}: $", "cpu")
    w.answer(r"Name \(Enter to skip\): $", "")
    w.answer(r"Start training\? \[Y/n\]: $", "")
    w.expect(r"Loading the model \(turbo from [^\n]*\) and the dataset \.\.\.")
    # the numbers all show, at 60 columns too (the bar goes first)
    w.expect(r"[1-9]\d*/100000 +loss \d\.\d{4} +lr \d\.\d+e-\d+ +[\d.]+ ?it/s +ETA \d+:\d\d:\d\d +(mem )?[\d.]+ ?GiB",
             timeout=90)
    w.ctrl_c()
    command = resume_line(w)
    config = cli_config(shlex.split(command)[2:], tmp_path, monkeypatch)  # it parses as the CLI's own command
    assert (config.device, config.epochs, config.rank, config.output_dir) == ("cpu", 100000, 4, "out")
    first = Path(config.resume_from)
    assert (tmp_path / first / "training_state.pt").is_file()

    main_menu(w, "1")  # the wizard knows the run was interrupted and offers to resume it
    w.answer(rf"Resume the interrupted run in out {WRAPPED}\(stopped at{WRAPPED} step \d+\)\?\s+\[Y/n\]: $", "")
    w.expect(r"Resuming", timeout=90)
    w.expect(r"[1-9]\d*/100000 +loss", timeout=90)
    w.ctrl_c()
    again = cli_config(shlex.split(resume_line(w))[2:], tmp_path, monkeypatch)
    assert int(Path(again.resume_from).name[5:]) > int(first.name[5:])  # it went on from the first stop
    quit_wizard(w)  # the menu came back

    assert "Traceback" not in w.text and "error: interrupted" not in w.text
    assert "kernels" not in w.text  # library noise goes to sidestep.log
    [checkpoint, _] = sorted((tmp_path / "out" / "checkpoints").glob("step_*"))
    assert (checkpoint / "training_state.pt").is_file() and (checkpoint / "adapter_model.safetensors").is_file()
    memory = [line for line in (tmp_path / "sidestep.log").read_text().splitlines() if "memory after action" in line]
    assert memory and " 0 live modules with weights" in memory[-1]


def test_dumb_terminal_trains_with_progress_lines_then_generates_with_the_trigger_tag(wizard, tmp_path, env):
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    manifest["metadata"]["custom_tag"] = "zxq"  # the trigger tag the adapter is trained with
    (tmp_path / "data" / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "tiny.json").write_text(json.dumps(
        {"rank": 4, "alpha": 8, "num_workers": 0, "gradient_accumulation": 1, "warmup_steps": 0, "save_every": 1000,
         "log_every": 1, "device": "cpu", "epochs": 40}))
    env = {k: v for k, v in env.items() if k != "SIDESTEP_WIZARD_DRY_RUN"}
    w = wizard(environ={**env, "TERM": "dumb"}, cols=60, rows=24)
    main_menu(w, "1")
    setup_answers(w, preset="tiny")
    w.fill({"dataset-dir": str(tmp_path / "data"), "output-dir": "out"}, "Same run from the command line",
           model="turbo")
    w.answer(r"Name \(Enter to skip\): $", "")
    w.answer(r"Start training\? \[Y/n\]: $", "")
    w.expect(r"Loading the model \(turbo from [^\n]*\) and the dataset \.\.\.")
    rest = r"  lr \d\.\d\de[-+]\d+  [\d.]+ it/s  ETA \d+:\d\d:\d\d  mem [\d.]+ GiB\n"
    w.expect(r"\nepoch 1/40  step 1/40  loss \d\.\d{4}" + rest, timeout=90)  # a line, not a redrawn bar
    last = w.expect(r"\nepoch 40/40  step 40/40  loss (\d\.\d{4})" + rest, timeout=120).group(1)
    assert w.expect(r"last loss (\d\.\d{4})").group(1) == last  # --plain and the summary report the same loss
    w.answer(r"Generate a short song with the new adapter\? \[y/N\]: $", "y")
    w.answer(r"Prompt \(style, genre, instruments\) \[zxq, \]: $", "zxq, calm piano")  # no model/adapter asked
    w.answer(r"Seconds of audio \[20\.0\]: $", "2")
    w.answer(r"Write the song to \(a \.wav file\) \[out/generated\.wav\]: $", "")
    w.answer(r"Generate\? \[Y/n\]: $", "")
    w.expect(r"Loading the model \(turbo from [^\n]*\) \.\.\.\n")  # before the silence
    song = w.expect(r"The song: (\S+generated\.wav)\n", timeout=120).group(1)
    assert song == str(tmp_path / "out" / "generated.wav") and Path(song).stat().st_size > 1000
    if shutil.which("aplay") or shutil.which("paplay") or shutil.which("ffplay") or shutil.which("afplay") or \
            shutil.which("xdg-open"):
        w.answer(r"Play it \([^\n]*\)\? \[y/N\]: $", "n")
    quit_wizard(w)
    assert "Traceback" not in w.text and "…" not in w.text and "kernels" not in w.text
    assert "Adapter folder" not in w.text and "Model: number" not in w.text.split("Training complete")[1]
    assert "Training will run on the CPU (no GPU found or chosen)" in w.text
    assert "Training complete: 40 epochs" in w.text


def test_only_model_not_asked_and_songs_given_as_tensors_are_offered_preprocessing(wizard, tmp_path,
                                                                                    tiny_root_readonly, monkeypatch):
    root = tmp_path / "one"
    root.mkdir()
    for part in tiny_root_readonly.iterdir():
        if part.name != "acestep-v15-base":
            (root / part.name).symlink_to(part)
    (tmp_path / "songs").mkdir()
    for name in ("a.wav", "b.flac"):
        (tmp_path / "songs" / name).write_bytes(b"")
    w = wizard(cols=60)
    main_menu(w, "1")
    setup_answers(w)
    w.answer(r"checkpoint-dir: [^$]*: $", str(root))
    w.expect(r"Model: acestep-v15-turbo \(official\), the only one")  # said, not asked
    w.answer(r"dataset-dir: [^$]*: $", str(tmp_path / "songs"))
    w.answer(rf"holds 2 song\(s\), not training{WRAPPED} tensors\.{WRAPPED} Preprocess them first\? \[Y/n\]: $", "")
    w.answer(r"dataset-json: [^$]*: $", "")
    w.answer(r"tensor-output: [^$]*: $", str(tmp_path / "tensors"))
    w.answer(r"rank: LoRA rank \[64\]: $", "b")  # back: past the model nobody typed, to the folder
    w.answer(r"checkpoint-dir: [^$]*: $", "")
    w.fill({"output-dir": "out"}, "Same run from the command line")
    finish(w)
    quit_wizard(w)
    assert "Model: number" not in w.text
    [run, ] = recorded(tmp_path)
    assert Config(**run["config"]) == cli_config(
        ["fixed", "--checkpoint-dir", str(root), "--preprocess", "--audio-dir", str(tmp_path / "songs"),
         "--tensor-output", str(tmp_path / "tensors"), "--output-dir", "out"], tmp_path, monkeypatch)


def test_ctrl_c_and_b_at_prompts_return_to_the_menu(wizard, tmp_path):
    w = wizard()
    main_menu(w, "1")
    w.answer(r"Training type:\n(?:.*\n)*  Choose 1-2 \[1\]: $", "")
    w.expect(r"Start from a preset:\n(?:.*\n)*  Choose 1-\d+ \[1\]: $")
    w.ctrl_c()
    w.expect(r"Cancelled; back to the main menu")
    main_menu(w, "preprocess")  # preprocess: `b` at its first question leaves the flow
    w.answer(r"checkpoint-dir: [^\n]*: $", "b")
    main_menu(w, "presets")
    w.answer(r"What would you like to do\?\n(?:.*\n)*  Choose 1-6 \[1\]: $", "6")
    w.expect(r"Main menu\n(?:.*\n)*?  Choose 1-\d+ \[1\]: $")
    w.ctrl_c()  # at the main menu itself: leave
    w.expect("Bye.")
    assert w.wait() == 0
    assert "Traceback" not in w.text and recorded(tmp_path) == []


def preprocess_then_train(w: Wizard, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "songs").mkdir()
    (tmp_path / "songs" / "a.wav").write_bytes(b"")  # counted by name, as preprocessing scans
    (tmp_path / "songs" / "dataset.json").write_text("{}")
    write_tensor_dataset(tmp_path / "tensors", n=1)  # what the (dry) preprocessing would have written
    main_menu(w, "preprocess")
    w.answer(r"checkpoint-dir: [^\n]*: $", "")
    w.answer(r"Model: number[^\n]*: $", "")
    w.answer(r"audio-dir: [^\n]*: $", str(tmp_path / "empty"))
    w.answer(r"empty: 0 songs found [^\n]*\n  audio-dir: [^\n]*: $", str(tmp_path / "songs"))
    w.expect(r"1 song\(s\) found; dataset\.json found beside them")
    w.answer(r"dataset-json: [^\n]*\[" + str(tmp_path / "songs" / "dataset.json") + r"\]: $", "")  # offered
    asked = w.fill({"tensor-output": str(tmp_path / "tensors")}, "Same run from the command line")
    assert asked == ["tensor-output"]
    w.answer(r"Start preprocessing\? \[Y/n\]: $", "")
    w.answer(r"Train on them now\? \[Y/n\]: $", "y")
    w.answer(r"Adapter:\n(?:.*\n)*  Choose 1-5 \[1\]: $", "1")  # LoRA, of the 5 kinds
    setup_answers(w)
    asked = w.fill({"output-dir": "chained"}, "Same run from the command line")
    assert "checkpoint-dir" not in asked and "dataset-dir" not in asked  # known from preprocessing
    finish(w)


def experimental(w: Wizard, tmp_path: Path) -> None:
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text("{}")
    data = str(tmp_path / "data")
    main_menu(w, "experimental")
    w.answer(r"Which tool\?\n(?:.*\n)*  Choose 1-4 \[1\]: $", "1")
    assert w.fill({"dataset-dir": data, "top-k": "8", "output": str(tmp_path / "a.json")}, "Same run from") == \
        ["checkpoint-dir", "dataset-dir", "batch-size", "top-k", "output"]
    w.answer(r"Start the estimate\? \[Y/n\]: $", "")
    w.answer(r"Train selectively on .*a\.json now\? \[y/N\]: $", "y")
    w.answer(r"Start from a preset:\n(?:.*\n)*  Choose 1-\d+ \[1\]: $", "")
    w.fill({"output-dir": "sel"}, "Same run from the command line")
    finish(w, command="selective")
    main_menu(w, "experimental")
    w.answer(r"Which tool\?\n(?:.*\n)*  Choose 1-4 \[1\]: $", "3")
    w.answer(r"Module config JSON files [^\n]*: $", f"{tmp_path / 'a.json'} {tmp_path / 'missing.json'}")
    w.answer(r"missing\.json: file not found\n  Module config JSON files [^\n]*: $",
             f"{tmp_path / 'a.json'} {tmp_path / 'b.json'}")
    w.expect(r"dry run: recorded 'compare-configs'")


def test_preprocess_chains_into_training_and_the_experimental_tools_run(wizard, tmp_path, tiny_root_readonly,
                                                                        monkeypatch):
    w = wizard()
    preprocess_then_train(w, tmp_path)
    experimental(w, tmp_path)
    quit_wizard(w)

    pre, fixed, estimate, selective, compare = recorded(tmp_path)
    root, data = str(tiny_root_readonly), str(tmp_path / "data")
    assert pre["command"] == "preprocess" and Config(**pre["config"]) == cli_config(
        ["preprocess", "--checkpoint-dir", root, "--audio-dir", str(tmp_path / "songs"), "--dataset-json",
         str(tmp_path / "songs" / "dataset.json"), "--tensor-output", str(tmp_path / "tensors")], tmp_path,
        monkeypatch)
    assert Config(**fixed["config"]) == cli_config(
        ["fixed", "--checkpoint-dir", root, "--dataset-dir", str(tmp_path / "tensors"),
         "--output-dir", "chained"], tmp_path, monkeypatch)
    assert Config(**estimate["config"]) == cli_config(
        ["estimate", "--checkpoint-dir", root, "--dataset-dir", data, "--top-k", "8", "--output",
         str(tmp_path / "a.json")], tmp_path, monkeypatch)
    assert selective["command"] == "selective" and Config(**selective["config"]) == cli_config(
        ["selective", "--checkpoint-dir", root, "--dataset-dir", data, "--module-config", str(tmp_path / "a.json"),
         "--output-dir", "sel"], tmp_path, monkeypatch)
    assert compare["args"] == {"configs": [str(tmp_path / "a.json"), str(tmp_path / "b.json")]}


def test_plain_wizard_over_a_pipe_has_no_escape_codes(tmp_path, env):
    (tmp_path / "shared.json").write_text(json.dumps({"description": "from a friend", "rank": 8, "alpha": 16}))
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "bad.json").write_text(json.dumps({"target_modules": ["foo_proj"]}))
    script = "\n".join(["presets", "1",  # presets: list
                        "3", str(tmp_path / "shared.json"),  # import
                        "4", "shared", str(tmp_path / "exported.json"),  # export
                        "6", "settings", "4",  # back; settings; back
                        "quit"]) + "\n"
    result = subprocess.run([sys.executable, str(TRAIN_PY), "--plain"], input=script, capture_output=True,
                            text=True, cwd=tmp_path, env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\x1b" not in result.stdout and "Traceback" not in result.stdout + result.stderr
    assert "Side-Step " in result.stdout and "Bye." in result.stdout
    for name in ("recommended", "high_quality", "quick_test", "vram_24gb_plus", "vram_16gb", "vram_12gb", "vram_8gb"):
        assert f"    {name} " in result.stdout
    assert json.loads((tmp_path / "home" / "xdg" / "sidestep" / "presets" / "shared.json").read_text())["rank"] == 8
    # presets are checked by the CLI's own rules when loaded: a module name no model has is named, not used
    # (compared without whitespace: the line wraps at the terminal width, and where depends on the temp path's length)
    flat = "".join(result.stdout.split())
    assert "skipped:" in flat and "bad.json:option'target_modules'unknownprojection'foo_proj'" in flat
    assert json.loads((tmp_path / "exported.json").read_text())["description"] == "from a friend"


def test_plain_on_a_dumb_terminal(wizard, env):
    w = wizard("--plain", cols=80, rows=24, environ={**env, "TERM": "dumb"})
    quit_wizard(w)
    assert "\x1b" not in w.raw.decode() and "Main menu" in w.text


def test_no_arguments_without_a_terminal_prints_the_help(capsys, monkeypatch, tmp_path):
    from sidestep.cli.main import main

    monkeypatch.chdir(tmp_path)  # sidestep.log goes to the working directory
    monkeypatch.setattr(sys, "stdin", io.StringIO())  # not a terminal: nobody to answer a wizard
    assert main([]) == 0
    assert "usage: train.py" in capsys.readouterr().out


def test_the_rules_the_wizard_checks_are_the_clis(tmp_path, monkeypatch):
    """One rule per option, in Config metadata: the CLI refuses what the wizard refuses, with the same words."""
    from sidestep.config import field_problem
    from sidestep.errors import SidestepError
    from sidestep.wizard.flows import CONFIG_FIELDS

    for flag, value, field, typed in (("--device", "gpu", "device", "gpu"),
                                      ("--target-modules", "foo_proj", "target_modules", ["foo_proj"])):
        problem = field_problem(CONFIG_FIELDS[field], typed)
        assert problem
        with pytest.raises(SidestepError, match=re.escape(f"{flag} {problem}")):
            cli_config(["fixed", flag, value], tmp_path, monkeypatch)
    with pytest.raises(SidestepError, match="--quantize-base nf4 works with --adapter-type lora only"):
        cli_config(["fixed", "--adapter-type", "lokr", "--quantize-base", "nf4"], tmp_path, monkeypatch)

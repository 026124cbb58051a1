"""Two-pass preprocessing on the tiny checkpoint with synthesized songs (docs/design.md §5, issue 4)."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from rich.console import Console

from sidestep.cli.main import main
from sidestep.config import Config
from sidestep.data.metadata import DatasetMeta, SampleMeta, match_entries, read_dataset_json
from sidestep.data.preprocess import (assign_sample_ids, encode_audio, file_sha256, preprocess_dataset,
                                      scan_audio_dir)
from sidestep.errors import SidestepError
from sidestep.model.loader import load_dit, load_silence_latent, load_text_encoder, load_vae

ROOT = Path(__file__).resolve().parents[1]
OUTPUT_KEYS = ("target_latents", "attention_mask", "encoder_hidden_states", "encoder_attention_mask",
               "context_latents", "metadata")  # one preprocessed sample's keys, in order (docs/design.md §5.6)
GOOD = ("c-track.mp3", "low_rate.ogg", "song.wav", "sub/song.wav", "surround.flac")
BAD = {  # file -> words its skip reason must contain
    "broken.wav": "broken link", "corrupt.flac": "corrupt audio", "empty.wav": "empty file",
    "renamed.mp3": "not a readable audio file", "silent.wav": "silent", "zero_length.wav": "zero-length",
    "notes.txt": "unsupported file type",
}


def noise(rate: int, channels: int, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal((int(rate * seconds), channels))).clip(-1, 1).astype(np.float32)


def tone(rate: int, channels: int, seconds: float = 1.0, freq: float = 330.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.stack([0.4 * np.sin(2 * np.pi * freq * (1 + c / 10) * t) for c in range(channels)], 1).astype(np.float32)


def write_songs(audio: Path) -> None:
    """Good songs at 5 rates, 1/2/6 channels, 4 formats, two sharing a name; and every kind of bad file."""
    (audio / "sub").mkdir(parents=True)
    sf.write(audio / "song.wav", tone(48000, 2), 48000)
    sf.write(audio / "sub" / "song.wav", noise(44100, 1), 44100)
    sf.write(audio / "c-track.mp3", tone(22050, 2, freq=500), 22050, format="MP3")
    sf.write(audio / "low_rate.ogg", noise(8000, 1, seed=3), 8000, format="OGG")
    sf.write(audio / "surround.flac", tone(96000, 6, freq=220), 96000)
    sf.write(audio / "corrupt.flac", tone(48000, 2), 48000)
    raw = bytearray((audio / "corrupt.flac").read_bytes())
    raw[len(raw) // 4:] = np.random.default_rng(0).integers(0, 256, len(raw) - len(raw) // 4, np.uint8).tobytes()
    (audio / "corrupt.flac").write_bytes(bytes(raw))
    (audio / "empty.wav").write_bytes(b"")
    sf.write(audio / "zero_length.wav", np.zeros((0, 2), np.float32), 48000)
    sf.write(audio / "silent.wav", np.zeros((48000, 2), np.float32), 48000)
    os.symlink(audio / "deleted-long-ago.wav", audio / "broken.wav")
    (audio / "renamed.mp3").write_text("[Verse] these are lyrics, not audio\n" * 30)
    (audio / "notes.txt").write_text("recorded in my bedroom\n")


DATASET = {
    "metadata": {"name": "mine", "custom_tag": "zx9", "tag_position": "prepend", "genre_ratio": 0},
    "samples": [
        {"filename": "song.wav", "caption": "bright synth arpeggio", "genre": "synthwave", "lyrics": "[Verse]\nla la",
         "bpm": 120, "keyscale": "C major", "timesignature": "4", "language": "en", "is_instrumental": False},
        {"audio_path": "/elsewhere/music/sub/song.wav", "caption": "rain noise", "bpm": 0},
        {"filename": "low_rate.ogg", "caption": "lofi hiss", "prompt_override": "genre", "genre": "lofi",
         "custom_tag": "own-tag"},
        {"filename": "missing.wav", "caption": "a song nobody exported"},
    ],
}


def make_config(root: Path, audio: Path, out: Path, dataset_json: Path | None = None, **kw) -> Config:
    return Config(checkpoint_dir=str(root), audio_dir=str(audio), tensor_output=str(out),
                  dataset_json=str(dataset_json) if dataset_json else None, **kw)


class Recorder:
    """Watches the passes: which models each loaded, and whether pass 1's are gone when pass 2 starts."""

    def __init__(self):
        self.events, self.refs, self.alive_at_pass2 = [], {}, None

    def __call__(self, name, info):
        self.events.append((name, info["pass"]))
        if name == "loaded":
            self.refs[info["pass"]] = {k: (type(m).__name__, m if m is None else weakref.ref(m))
                                       for k, m in info["models"].items()}
        if name == "pass_start" and info["pass"] == 2:
            self.alive_at_pass2 = [k for k, (_, ref) in self.refs.get(1, {}).items() if ref is not None and ref()]


def quiet() -> Console:
    return Console(file=io.StringIO(), force_terminal=False, width=150)


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> SimpleNamespace:
    base = tmp_path_factory.mktemp("songs")
    write_songs(base / "audio")
    (base / "dataset.json").write_text(json.dumps(DATASET))
    return SimpleNamespace(audio=base / "audio", json=base / "dataset.json")


@pytest.fixture(scope="module")
def first(songs, tiny_root_readonly, tmp_path_factory) -> SimpleNamespace:
    out = tmp_path_factory.mktemp("run") / "tensors"
    recorder, console = Recorder(), quiet()
    report = preprocess_dataset(make_config(tiny_root_readonly, songs.audio, out, songs.json), console=console,
                                on_event=recorder)
    manifest = json.loads((out / "manifest.json").read_text())
    return SimpleNamespace(out=out, report=report, recorder=recorder, text=console.file.getvalue(),
                           manifest=manifest, config=make_config(tiny_root_readonly, songs.audio, out, songs.json))


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------------------
# Output format


def test_one_pt_per_good_song_with_exactly_the_spec_keys(first, tiny_root_readonly):
    names = sorted(p.name for p in first.out.glob("*.pt"))
    assert names == ["c-track.pt", "low_rate.pt", "song.pt", "sub__song.pt", "surround.pt"]
    silence = load_silence_latent(tiny_root_readonly / "acestep-v15-turbo" / "silence_latent.pt")
    for name in names:
        sample = load(first.out / name)
        assert tuple(sample) == OUTPUT_KEYS
        T = sample["target_latents"].shape[0]
        assert T == 25  # 1 s at 48 kHz / hop 1920
        assert sample["target_latents"].shape == (T, 64) and sample["target_latents"].dtype == torch.float32
        assert torch.equal(sample["attention_mask"], torch.ones(T))
        assert sample["encoder_hidden_states"].shape == (512 + 1 + 256, 64)  # L = 769, D = tiny hidden
        assert sample["encoder_attention_mask"].shape == (769,)
        assert sample["encoder_attention_mask"].dtype == torch.bool
        mask = sample["encoder_attention_mask"]
        assert mask[: int(mask.sum())].all() and not mask[int(mask.sum()):].any()  # valid tokens packed first
        context = sample["context_latents"]
        assert context.shape == (T, 128)  # docs/design.md §8 Q20
        assert torch.equal(context[:, :64], silence[0, :T]) and torch.equal(context[:, 64:], torch.ones(T, 64))
        assert context.untyped_storage().nbytes() == T * 128 * 4  # not a view of the whole silence latent


def test_same_named_songs_in_subfolders_do_not_collide(first):
    top, sub = load(first.out / "song.pt"), load(first.out / "sub__song.pt")
    assert top["metadata"]["audio_path"].endswith("audio/song.wav")
    assert sub["metadata"]["audio_path"].endswith("audio/sub/song.wav")
    assert not torch.equal(top["target_latents"], sub["target_latents"])


def test_metadata_comes_from_the_dataset_json(first):
    meta = load(first.out / "song.pt")["metadata"]
    assert meta == {"audio_path": meta["audio_path"], "filename": "song.wav", "caption": "bright synth arpeggio",
                    "lyrics": "[Verse]\nla la", "duration": 1.0, "bpm": 120, "keyscale": "C major",
                    "timesignature": "4", "genre": "synthwave", "custom_tag": "zx9", "prompt_override": None,
                    "is_instrumental": False}
    sub = load(first.out / "sub__song.pt")["metadata"]  # matched by audio_path, not filename
    assert sub["caption"] == "rain noise" and sub["lyrics"] == "[Instrumental]" and sub["is_instrumental"]
    info = {i["source"]: i for i in first.manifest["sample_info"]}
    assert info["song.wav"]["caption"] == "zx9, bright synth arpeggio"
    assert info["low_rate.ogg"]["caption"] == "own-tag, lofi"  # prompt_override genre, sample's own tag
    assert info["surround.flac"]["caption"] == "zx9, surround"  # no entry: caption from the file name
    assert info["c-track.mp3"]["caption"] == "zx9, c track"


def test_unmatched_entries_and_files_without_entry_are_reported(first):
    assert first.manifest["unmatched_json_entries"] == ["missing.wav"]
    assert first.report.unmatched_entries == ["missing.wav"]
    assert "c-track.mp3" in first.manifest["files_without_json_entry"]
    assert "surround.flac" in first.manifest["files_without_json_entry"]
    assert "song.wav" not in first.manifest["files_without_json_entry"]
    assert "dataset JSON entry 'missing.wav' matches no audio file" in first.text
    assert "have no dataset JSON entry" in first.text


def test_every_bad_file_is_skipped_with_its_reason(first):
    skipped = {s["file"]: s["reason"] for s in first.manifest["skipped"]}
    assert set(skipped) == set(BAD)
    for name, words in BAD.items():
        assert words in skipped[name], (name, skipped[name])
        line = next(ln for ln in first.text.splitlines() if ln.startswith(f"| {name} "))
        assert "skipped" in line  # one row per file in the summary table
    assert first.report.num_samples == 5 and sorted(first.report.processed) == sorted(GOOD)


def test_manifest_fields(first, songs):
    m = first.manifest
    assert m["samples"] == ["c-track.pt", "low_rate.pt", "song.pt", "sub__song.pt", "surround.pt"]
    assert m["num_samples"] == 5 and m["metadata"]["num_samples"] == 5
    assert {k: m["metadata"][k] for k in ("name", "custom_tag", "tag_position", "all_instrumental", "genre_ratio")} == \
        {"name": "tensors", "custom_tag": "zx9", "tag_position": "prepend", "all_instrumental": False,
         "genre_ratio": 0.0}
    assert m["model"]["name"] == "acestep-v15-turbo" and m["model"]["variant"] == "turbo"
    assert (m["model"]["family"], m["model"]["encoder_width"]) == ("2B", 64)  # what training checks (issue 15)
    assert m["settings"]["vae_mode"] == "sample" and m["settings"]["max_duration"] == 240.0
    assert m["settings"]["seed"] == 42 and m["settings"]["dtype"] == "fp32"
    for info in m["sample_info"]:
        assert info["sha256"] == file_sha256(songs.audio / info["source"])
        assert info["shapes"]["encoder_hidden_states"] == [769, 64] and info["latent_frames"] == 25
        assert abs(info["duration"] - 1.0) < 0.08
    # The tensors do not depend on the adapter: nothing adapter-related decides them.
    assert not [k for k in m["settings"] if any(w in k for w in ("adapter", "lora", "lokr", "rank", "alpha"))]
    assert not (first.out / ".pass1").exists()  # intermediates are gone after a complete run


def test_manifest_is_what_training_reads(first):
    from sidestep.data.manifest import read_manifest

    assert [p.name for p in read_manifest(first.out).files()] == first.manifest["samples"]


def test_progress_lines_are_plain_without_a_terminal(first):
    assert "Pass 1/2 (VAE + text encoder) [1/" in first.text and "ETA" in first.text
    assert "Pass 2/2 (condition encoder) [5/5]" in first.text
    assert "\x1b[" not in first.text


# --------------------------------------------------------------------------------------
# The two passes


def test_pass1_holds_only_vae_and_text_encoder_and_frees_them_before_pass2(first):
    rec = first.recorder
    assert rec.events == [("pass_start", 1), ("loaded", 1), ("pass_end", 1),
                          ("pass_start", 2), ("loaded", 2), ("pass_end", 2)]
    assert {k: t for k, (t, _) in rec.refs[1].items()} == {"vae": "AutoencoderOobleck", "text_encoder": "Qwen3Model"}
    assert rec.alive_at_pass2 == []  # weakrefs to the VAE and text encoder were dead when pass 2 began
    assert {k: t for k, (t, _) in rec.refs[2].items()} == {"condition_encoder": "AceStepConditionEncoder",
                                                          "transformer": "NoneType"}


def test_against_an_independent_computation(tiny_root_readonly, tmp_path):
    """Audio -> VAE mean, prompt -> Qwen3 without mask, lyrics -> embed_tokens, condition encoder."""
    audio = tmp_path / "audio"
    audio.mkdir()
    data = noise(44100, 1, seconds=0.5, seed=7)
    sf.write(audio / "one.wav", data, 44100, subtype="FLOAT")
    meta = {"samples": [{"filename": "one.wav", "caption": "test caption", "bpm": 100, "keyscale": "D minor",
                         "timesignature": "4", "lyrics": "la la la"}]}
    (tmp_path / "d.json").write_text(json.dumps(meta))
    out = tmp_path / "out"
    preprocess_dataset(make_config(tiny_root_readonly, audio, out, tmp_path / "d.json", vae_mode="mean"),
                       console=quiet())
    got = load(out / "one.pt")

    wave = torchaudio.transforms.Resample(44100, 48000)(torch.from_numpy(data.T.copy())).expand(2, -1)
    vae = load_vae(tiny_root_readonly / "vae")
    tokenizer, qwen = load_text_encoder(tiny_root_readonly / "Qwen3-Embedding-0.6B")
    dit = load_dit(tiny_root_readonly / "acestep-v15-turbo")
    prompt = ("# Instruction\nFill the audio semantic mask based on the given conditions:\n\n# Caption\n"
              "test caption\n\n# Metas\n- bpm: 100\n- timesignature: 4\n- keyscale: D minor\n- duration: 0 seconds\n"
              "<|endoftext|>\n")
    with torch.no_grad():
        latents = vae.encode(wave[None]).latent_dist.mean[0].T
        text = tokenizer(prompt, padding="max_length", max_length=256, truncation=True, return_tensors="pt")
        lyrics = tokenizer("la la la", padding="max_length", max_length=512, truncation=True, return_tensors="pt")
        hidden, mask = dit.condition_encoder(
            text_hidden_states=qwen(input_ids=text.input_ids).last_hidden_state,  # §8 Q10: no attention mask
            text_attention_mask=text.attention_mask.float(),
            lyric_hidden_states=qwen.embed_tokens(lyrics.input_ids),  # §8 Q11: embeddings only
            lyric_attention_mask=lyrics.attention_mask.float(),
            refer_audio_acoustic_hidden_states_packed=torch.zeros(1, 1, 64),  # §8 Q12
            refer_audio_order_mask=torch.zeros(1, dtype=torch.long))
    assert got["target_latents"].shape == (12, 64)  # floor(24000 / 1920)
    torch.testing.assert_close(got["target_latents"], latents, rtol=0, atol=1e-6)
    torch.testing.assert_close(got["encoder_hidden_states"], hidden[0], rtol=0, atol=1e-5)
    assert torch.equal(got["encoder_attention_mask"], mask[0].bool())
    assert got["metadata"]["duration"] == 0.5


def test_long_audio_is_tiled_with_independent_noise_per_window(tiny_root_readonly):
    """docs/design.md §5.2 windows on a short clip: chunk 8 frames, overlap 2 frames each side, 12 frames."""
    vae = load_vae(tiny_root_readonly / "vae")
    wave = torch.from_numpy(noise(48000, 2, seconds=0.48, seed=11).T.copy())  # 23040 samples
    windows = [((0, 11520), (0, 4)), ((3840, 19200), (2, 6)), ((11520, 23040), (2, 6))]  # (window, kept frames)
    with torch.no_grad():
        dists = [vae.encode(wave[None, :, a:b]).latent_dist for (a, b), _ in windows]
    sampled = encode_audio(vae, wave, "sample", torch.Generator().manual_seed(5), 15360, 3840)
    gen = torch.Generator().manual_seed(5)  # one fresh draw per window, in window order
    draws = [d.mean + d.std * torch.randn(d.mean.shape, generator=gen) for d in dists]
    expected = torch.cat([z[..., lo:hi] for z, (_, (lo, hi)) in zip(draws, windows)], -1)[0].T
    assert sampled.shape == (12, 64) and torch.equal(sampled, expected)
    means = torch.cat([d.mean[..., lo:hi] for d, (_, (lo, hi)) in zip(dists, windows)], -1)[0].T
    assert not torch.equal(sampled, means)


# --------------------------------------------------------------------------------------
# Incremental and resumable


def test_rerun_skips_unchanged_samples_without_loading_models(first, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(first.out, out)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("*.pt")}
    recorder = Recorder()
    # Also for another adapter: the tensors are adapter-agnostic, so LoKR reuses LoRA's.
    config = first.config.replace(tensor_output=str(out), adapter_type="lokr", rank=8, alpha=16)
    report = preprocess_dataset(config, console=quiet(), on_event=recorder)
    assert sorted(report.reused) == sorted(GOOD) and report.processed == []
    assert {f for f, _ in report.skipped} == set(BAD)
    assert ("loaded", 1) not in recorder.events and ("loaded", 2) not in recorder.events
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("*.pt")} == before


def test_changed_metadata_recomputes_only_that_sample(first, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(first.out, out)
    changed = json.loads(json.dumps(DATASET))
    changed["samples"][0]["caption"] = "a brand new caption"
    (tmp_path / "d.json").write_text(json.dumps(changed))
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")}
    report = preprocess_dataset(first.config.replace(tensor_output=str(out), dataset_json=str(tmp_path / "d.json")),
                                console=quiet())
    assert report.processed == ["song.wav"] and len(report.reused) == 4
    assert load(out / "song.pt")["metadata"]["caption"] == "a brand new caption"
    assert not torch.equal(load(out / "song.pt")["encoder_hidden_states"],
                           load(first.out / "song.pt")["encoder_hidden_states"])
    # Same audio, same seed: the latents do not change with the caption.
    assert torch.equal(load(out / "song.pt")["target_latents"], load(first.out / "song.pt")["target_latents"])
    assert all(p.stat().st_mtime_ns == before[p.name] for p in out.glob("*.pt") if p.name != "song.pt")


def _run_until(cmd: list[str], cwd: Path, ready) -> None:
    """Start `cmd`, SIGKILL it the moment `ready()` holds."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"the run ended (rc {proc.returncode}) before it could be interrupted: "
                            f"{proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the run never reached the interruption point")
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()


def test_killed_runs_finish_bit_identical_to_an_uninterrupted_run(first, songs, tiny_root_readonly, tmp_path):
    out = tmp_path / "tensors"
    cmd = [sys.executable, str(ROOT / "train.py"), "--plain", "preprocess", "--checkpoint-dir",
           str(tiny_root_readonly), "--audio-dir", str(songs.audio), "--dataset-json", str(songs.json),
           "--tensor-output", str(out)]
    # Killed in pass 1, as soon as the first intermediate is on disk ...
    _run_until(cmd, tmp_path, lambda: any((out / ".pass1").glob("*.pt")))
    assert not list(out.glob("*.pt")) and not (out / "manifest.json").exists()
    # ... then in pass 2, as soon as the first sample file is written.
    _run_until(cmd, tmp_path, lambda: any(out.glob("*.pt")))
    assert any((out / ".pass1").glob("*.pt")), "pass 2 was not interrupted midway"
    assert not (out / "manifest.json").exists()
    report = preprocess_dataset(make_config(tiny_root_readonly, songs.audio, out, songs.json), console=quiet())
    assert report.num_samples == 5
    names = sorted(p.name for p in first.out.glob("*.pt"))
    assert sorted(p.name for p in out.glob("*.pt")) == names
    for name in names:
        assert (out / name).read_bytes() == (first.out / name).read_bytes(), name
        a, b = load(out / name), load(first.out / name)
        assert all(torch.equal(a[k], b[k]) for k in OUTPUT_KEYS[:-1]) and a["metadata"] == b["metadata"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["samples"] == first.manifest["samples"]
    assert manifest["sample_info"] == first.manifest["sample_info"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # no temp files left behind


# --------------------------------------------------------------------------------------
# CLI and errors


def test_cli_requires_its_options(capsys):
    assert main(["--plain", "preprocess"]) == 2
    out = capsys.readouterr().out.strip()
    assert out.count("\n") == 0
    assert "--audio-dir" in out and "--tensor-output" in out and "--checkpoint-dir" in out


def test_nothing_succeeded_exits_nonzero_with_rich_progress_and_table(tiny_root_readonly, tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "quiet.wav", np.zeros((4800, 2), np.float32), 48000)
    (audio / "cover.jpg").write_bytes(b"\xff\xd8\xff")
    console = Console(file=io.StringIO(), force_terminal=True, width=150)
    with pytest.raises(SidestepError, match="no sample could be preprocessed"):
        preprocess_dataset(make_config(tiny_root_readonly, audio, tmp_path / "out"), console=console)
    text = console.file.getvalue()
    assert "\x1b[" in text and "Pass 1/2" in text and "1/1" in text  # a Rich bar with its count
    assert "quiet.wav" in text and "silent" in text and "cover.jpg" in text
    # The same through the CLI: exit code 2, the reasons printed.
    assert main(["--plain", "preprocess", "--checkpoint-dir", str(tiny_root_readonly), "--audio-dir", str(audio),
                 "--tensor-output", str(tmp_path / "out")]) == 2


def test_missing_audio_dir_and_empty_folder_are_one_line_errors(tiny_root_readonly, tmp_path):
    with pytest.raises(SidestepError, match="audio folder not found"):
        preprocess_dataset(make_config(tiny_root_readonly, tmp_path / "nope", tmp_path / "out"), console=quiet())
    (tmp_path / "empty").mkdir()
    with pytest.raises(SidestepError, match="no audio files found"):
        preprocess_dataset(make_config(tiny_root_readonly, tmp_path / "empty", tmp_path / "out"), console=quiet())


# --------------------------------------------------------------------------------------
# Files, names and the dataset JSON (no models)


def test_sample_ids_never_collide():
    files = ["song.wav", "sub/song.wav", "song.flac", "a__b.wav", "a/b.wav", "deep/er/x.mp3"]
    ids = assign_sample_ids(files)
    assert len(set(ids.values())) == len(files)
    assert ids["sub/song.wav"] == "sub__song" and ids["deep/er/x.mp3"] == "deep__er__x"
    assert ids["song.wav"] == "song_wav" and ids["song.flac"] == "song_flac"


def test_scan_skips_hidden_files_and_the_output_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x.wav").write_bytes(b"1")
    (tmp_path / ".hidden.wav").write_bytes(b"1")
    (tmp_path / "a.WAV").write_bytes(b"1")
    (tmp_path / "readme.md").write_text("x")
    audio, other = scan_audio_dir(tmp_path, exclude=(tmp_path / "out",))
    assert audio == ["a.WAV"] and [f for f, _ in other] == ["readme.md"]


def test_dataset_json_bare_list_and_audio_path_fallback(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"audio_path": "C:\\music\\x.wav", "caption": "c"}, {"filename": "y.flac"}]))
    meta = read_dataset_json(path)
    assert [s.key for s in meta.samples] == ["x.wav", "y.flac"] and meta.tag_position == "prepend"


@pytest.mark.parametrize("content,words", [
    ("{not json", "invalid JSON at line 1"),
    (json.dumps({"samples": {"a": 1}}), "'samples' must be a list"),
    (json.dumps({"samples": [{"filename": "a.wav", "bpm": [120]}]}), "samples[0].bpm must be a number or text"),
    (json.dumps({"samples": [{"filename": "a.wav", "is_instrumental": "yes"}]}), "must be true or false"),
    (json.dumps({"samples": [{"caption": "no file"}]}), "neither 'filename' nor 'audio_path'"),
    (json.dumps({"metadata": {"tag_position": "middle"}, "samples": []}), "metadata.tag_position"),
    (json.dumps({"metadata": {"genre_ratio": 150}, "samples": []}), "metadata.genre_ratio"),
    (json.dumps("just a string"), "the top level"),
])
def test_malformed_dataset_json_is_a_one_line_error_naming_the_file(tmp_path, content, words):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(SidestepError) as err:
        read_dataset_json(path)
    assert words in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_entries_match_by_path_then_by_name():
    entries = (SampleMeta(key="song.wav", filename="song.wav", caption="top"),
               SampleMeta(key="song.wav", audio_path="/old/pc/sub/song.wav", caption="sub"),
               SampleMeta(key="gone.wav", filename="gone.wav"))
    matched, unmatched = match_entries(["song.wav", "sub/song.wav", "new.wav"], DatasetMeta(samples=entries))
    assert matched["sub/song.wav"].caption == "sub" and matched["song.wav"].caption == "top"
    assert "new.wav" not in matched and [e.key for e in unmatched] == ["gone.wav"]

"""One song never sinks a preprocessing run: long and non-UTF-8 names, odd and absurd sample rates, huge
headers, huge captions and lyrics, and a song that fails in an unforeseen way. Each either becomes a sample or is
skipped with its reason (in the table and the manifest); the other songs are processed, the manifest is written,
and a rerun finds everything unchanged."""

import json
import os
import struct

import numpy as np
import pytest
import soundfile as sf

from sidestep.data.audio import MAX_DECODED_BYTES, load_audio, resample_ratio
from sidestep.data.preprocess import CAPTION_MAX_CHARS, LYRICS_MAX_CHARS, STORED_MAX_CHARS, assign_sample_ids
from sidestep.io import json_text, temp_prefix

from .support import run_cli, tone, write_song


def _preprocess(root, audio, out, *extra):
    return run_cli("preprocess", "--checkpoint-dir", root, "--audio-dir", audio, "--tensor-output", out, *extra)


def _manifest(out):
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def _sources(out):
    return sorted(i["source"] for i in _manifest(out)["sample_info"])


def _skipped(out):
    return {s["file"]: s["reason"] for s in _manifest(out)["skipped"]}


def _rerun_is_unchanged(root, audio, out, processed):
    code, text = _preprocess(root, audio, out)
    assert code == 0, text
    assert f"0 processed, {processed} unchanged" in text, text


# ------------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize("name", ["a" * 251 + ".wav", "é" * 125 + ".wav", "x" * 200 + " (final mix).flac",
                                  "nested/" + "b" * 240 + ".wav"])
def test_a_legal_long_file_name_is_processed(tiny_root_readonly, tmp_path, name):
    audio, out = tmp_path / "songs", tmp_path / "out"
    write_song(audio / "fine.wav")
    write_song(audio / name, freq=440)
    code, text = _preprocess(tiny_root_readonly, audio, out)
    assert code == 0, text
    assert _sources(out) == sorted(["fine.wav", name])
    for path in out.rglob("*"):
        assert len(os.fsencode(path.name)) <= 255
    _rerun_is_unchanged(tiny_root_readonly, audio, out, 2)


@pytest.mark.parametrize("raw", [b"caf\xe9.wav", b"\xff\xfe.wav", b"ok-\x80\x81-\xc3.wav"])
def test_a_file_name_that_is_not_utf8_is_processed_and_stored_losslessly(tiny_root_readonly, tmp_path, raw):
    audio, out = tmp_path / "songs", tmp_path / "out"
    write_song(audio / "fine.wav")
    os.rename(write_song(audio / "tmp.wav", freq=440), audio / os.fsdecode(raw))  # soundfile wants UTF-8 names
    code, text = _preprocess(tiny_root_readonly, audio, out)
    assert code == 0, text
    sources = _sources(out)
    assert sorted(os.fsencode(s) for s in sources) == sorted([b"fine.wav", raw])
    manifest = _manifest(out)
    for sample in manifest["samples"]:
        assert (out / sample).is_file()
        sample.encode("utf-8")  # the tensor files have printable names
    _rerun_is_unchanged(tiny_root_readonly, audio, out, 2)
    code, text = run_cli("fixed", "--checkpoint-dir", tiny_root_readonly, "--dataset-dir", out, "--output-dir",
                         tmp_path / "adapter", "--epochs", "1", "--num-workers", "0", "--rank", "4", "--alpha", "8")
    assert code == 0, text


def test_sample_ids_stay_short_unique_and_printable():
    rng = np.random.default_rng(3)
    names = [os.fsdecode(bytes(rng.integers(1, 256, size=n).tolist()).replace(b"/", b"_")) + ".wav"
             for n in rng.integers(1, 250, size=200)]
    names += ["a" * 250 + ".wav", "a" * 250 + ".flac", "a" * 249 + "b.wav"]
    ids = assign_sample_ids(names)
    assert len(set(ids.values())) == len(names)
    for value in ids.values():
        assert len(value.encode("utf-8")) <= 140
    for name in names:
        assert len(temp_prefix(name).encode("utf-8", "surrogateescape")) <= 140


def test_json_text_round_trips_any_name():
    names = [os.fsdecode(bytes([b])) for b in range(128, 256)] + ["é", "日本", "\u2028"]
    text = json_text({"names": names})
    text.encode("utf-8")
    assert json.loads(text)["names"] == names


# ------------------------------------------------------------------------------------------
# Sample rates and sizes


@pytest.mark.parametrize("rate", [44101, 47999, 44056, 96001, 8001, 3, 192000, 384000])
def test_any_sample_rate_resamples_with_a_small_kernel(tmp_path, rate):
    source, target = resample_ratio(rate, 48000)
    assert source * target <= 4_000_000
    assert abs(source / target - rate / 48000) <= 3e-4 * rate / 48000
    path = tmp_path / "odd.wav"
    frames = max(int(rate * 0.3), 1)
    sf.write(path, tone(rate, 1, frames / rate, freq=min(330.0, rate / 4)), rate)
    if rate < 10:
        return  # too short to be a sample at all; the kernel bound is what matters
    clip = load_audio(path, 48000, 240.0)
    assert clip.waveform.shape[-1] == pytest.approx(0.3 * 48000, abs=48)


def test_rates_of_the_world_keep_their_exact_ratio():
    for rate in (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 176400, 192000):
        source, target = resample_ratio(rate, 48000)
        assert source * 48000 == target * rate


def test_odd_rate_song_is_processed_with_the_others(tiny_root_readonly, tmp_path):
    audio, out = tmp_path / "songs", tmp_path / "out"
    write_song(audio / "fine.wav")
    write_song(audio / "odd.wav", rate=44101)
    write_song(audio / "odd2.wav", rate=47993)
    code, text = _preprocess(tiny_root_readonly, audio, out)
    assert code == 0, text
    assert _sources(out) == ["fine.wav", "odd.wav", "odd2.wav"]


def _huge_header_wav(path, channels, rate):
    """A 16-bit WAV whose header claims `channels` x as many frames as 4 GB hold, written sparse."""
    data_bytes = (0xFFFFFF00 // (2 * channels)) * 2 * channels
    header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt " + struct.pack(
        "<IHHIIHH", 16, 1, channels, rate, rate * 2 * channels, 2 * channels, 16) + b"data" + \
        struct.pack("<I", data_bytes)
    with open(path, "wb") as fh:
        fh.write(header + (np.ones(4096, "<i2") * 1000).tobytes())
        fh.truncate(len(header) + data_bytes)
    return path


@pytest.mark.parametrize("channels,rate", [(1000, 192000), (64, 1_000_000), (8, 4_000_000)])
def test_a_header_that_would_need_gigabytes_is_skipped(tiny_root_readonly, tmp_path, channels, rate):
    audio, out = tmp_path / "songs", tmp_path / "out"
    write_song(audio / "fine.wav")
    _huge_header_wav(audio / "huge.wav", channels, rate)
    code, text = _preprocess(tiny_root_readonly, audio, out)
    assert code == 0, text
    assert _sources(out) == ["fine.wav"]
    reason = _skipped(out)["huge.wav"]
    assert reason.startswith(("too large to decode", "unsupported sample rate", "not a readable audio file")), reason
    assert "huge.wav" in text and "skipped" in text
    assert MAX_DECODED_BYTES == 2 << 30


# ------------------------------------------------------------------------------------------
# Text


@pytest.mark.parametrize("field,size", [("caption", 20_000_000), ("lyrics", 20_000_000), ("caption", 16_385),
                                        ("lyrics", 40_000), ("prompt_override", 5_000_000)])
def test_a_huge_caption_or_lyrics_is_cut_before_tokenizing(tiny_root_readonly, tmp_path, field, size):
    audio, out = tmp_path / "songs", tmp_path / "out"
    write_song(audio / "fine.wav")
    write_song(audio / "wordy.wav", freq=440)
    words = ("la " * (size // 3 + 1))[:size]
    entry = {"filename": "wordy.wav", field: words}
    (tmp_path / "data.json").write_text(json.dumps({"samples": [entry]}))
    code, text = _preprocess(tiny_root_readonly, audio, out, "--dataset-json", tmp_path / "data.json")
    assert code == 0, text
    assert _sources(out) == ["fine.wav", "wordy.wav"]
    assert (out / "manifest.json").stat().st_size < 200_000
    import torch

    meta = torch.load(out / "wordy.pt", weights_only=True)["metadata"]
    assert len(meta[field]) <= STORED_MAX_CHARS + 20  # lyrics may gain a "[Verse]" head
    assert len(meta[field]) == min(size, STORED_MAX_CHARS) or field == "lyrics"
    info = next(i for i in _manifest(out)["sample_info"] if i["source"] == "wordy.wav")
    assert len(info["caption"]) <= CAPTION_MAX_CHARS + 100 and LYRICS_MAX_CHARS == 32768


# ------------------------------------------------------------------------------------------
# A song that fails in a way nobody foresaw


@pytest.mark.parametrize("damage", [b"", b"not a torch file", b"PK\x03\x04broken zip"])
def test_a_song_failing_in_pass_2_is_skipped_and_the_rest_finish(tiny_root_readonly, tmp_path, damage):
    from sidestep.config import Config
    from sidestep.data.preprocess import PASS1_DIR, preprocess_dataset

    audio, out = tmp_path / "songs", tmp_path / "out"
    write_song(audio / "fine.wav")
    write_song(audio / "victim.wav", freq=440)
    config = Config(checkpoint_dir=str(tiny_root_readonly), audio_dir=str(audio), tensor_output=str(out))
    preprocess_dataset(config, passes=(1,))
    victim = next((out / PASS1_DIR).glob("victim.*.pt"))
    victim.write_bytes(damage)
    report = preprocess_dataset(config, passes=(2,))
    assert report.samples == ["fine.pt"]
    assert "could not be processed" in _skipped(out)["victim.wav"]
    code, text = _preprocess(tiny_root_readonly, audio, out)  # a rerun redoes the victim from its audio
    assert code == 0, text
    assert _sources(out) == ["fine.wav", "victim.wav"]

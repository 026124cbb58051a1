"""A music folder full of what users really have: every kind of broken, odd and huge file, preprocessed
in one run. Each bad file is skipped with a one-line reason that names the fix, every good one becomes a
sample, and what an earlier run produced is left exactly as it was."""

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from .support import SECONDS, cut, run_cli, snapshot, write_long_wav, write_song

UNICODE = "my song – ünïcødé 歌.wav"
SPACED = " leading and  trailing .wav"
MAX_DURATION = 1.0

# file -> (source rate, source channels, seconds used): everything here must become a sample.
GOOD = {
    "good.wav": (48000, 2, SECONDS),
    "mono.wav": (44100, 1, SECONDS),
    UNICODE: (48000, 2, SECONDS),
    SPACED: (22050, 2, SECONDS),
    "rate_8k.wav": (8000, 2, SECONDS),
    "rate_192k.wav": (192000, 2, SECONDS),
    "float32.wav": (48000, 2, SECONDS),
    "pcm24.wav": (48000, 2, SECONDS),
    "surround_6ch.wav": (48000, 6, SECONDS),
    "two_hours.wav": (16000, 1, MAX_DURATION),
    "cut_short.wav": (48000, 2, None),  # truncated: what is there is used, with a note
    "cut_short.mp3": (48000, 2, None),
    "album.wav/inside.wav": (48000, 2, SECONDS),
}
EARLIER = ("good.wav", "mono.wav", UNICODE)  # preprocessed once before the bad files arrive

REEXPORT = "re-export or re-download the song"
# file -> its exact skip reason (a regular expression where a decoder's own words are part of it)
BAD = {
    "empty.wav": "empty file (0 bytes); copy or export the song again",
    "zero_length.wav": f"zero-length audio (the file holds no samples); {REEXPORT}",
    "header_only.wav": f"zero-length audio (the file holds no samples); {REEXPORT}",
    "silent.wav": "silent: every sample is (near) zero; remove it, or export the track that has the audio",
    "lyrics.mp3": "not a readable audio file: unsupported format, damaged header, or not audio at all (wav, flac, "
                  "mp3 and ogg are read); re-export it as wav or flac",
    "noise.ogg": "not a readable audio file: unsupported format, damaged header, or not audio at all (wav, flac, "
                 "mp3 and ogg are read); re-export it as wav or flac",
    "corrupt.flac": r"re:corrupt audio: decoding failed \([^;]+\); " + REEXPORT,
    "cut_short.flac": r"re:corrupt audio: decoding failed \([^;]+\); " + REEXPORT,
    "loop_a.wav": "unreadable: link loop (the link leads back to itself); replace it with the song file or delete it",
    "loop_b.wav": "unreadable: link loop (the link leads back to itself); replace it with the song file or delete it",
    "moved_away.wav": "unreadable: broken link (the file it points to is gone); point it at the song or delete it",
    "notes.txt": "unsupported file type (.txt); Side-Step reads wav, flac, mp3 and ogg",
}
if sys.platform.startswith("linux"):  # reading /proc/self/mem at address 0 fails like a bad disk sector
    BAD["bad_sector.wav"] = "unreadable: Input/output error; check the drive and copy the file again"


def write_corpus(audio: Path) -> None:
    write_song(audio / "mono.wav", 44100, 1)
    write_song(audio / SPACED, 22050, 2, freq=440)
    write_song(audio / "rate_8k.wav", 8000, 2, freq=220)
    write_song(audio / "rate_192k.wav", 192000, 2, freq=550)
    write_song(audio / "float32.wav", subtype="FLOAT", freq=660)
    write_song(audio / "pcm24.wav", subtype="PCM_24", freq=770)
    write_song(audio / "surround_6ch.wav", 48000, 6, freq=250)
    write_long_wav(audio / "two_hours.wav")
    cut(write_song(audio / "cut_short.wav", seconds=1.0), 0.4)
    cut(write_song(audio / "cut_short.mp3", seconds=1.0, format="MP3"), 0.4)
    (audio / "empty.wav").write_bytes(b"")
    sf.write(audio / "zero_length.wav", np.zeros((0, 2), np.float32), 48000)
    cut(write_song(audio / "header_only.wav"), 0).write_bytes((audio / "good.wav").read_bytes()[:44])
    sf.write(audio / "silent.wav", np.zeros((14400, 2), np.float32), 48000)
    (audio / "lyrics.mp3").write_text("[Verse]\nthese are my lyrics, saved with the wrong extension\n" * 30)
    (audio / "noise.ogg").write_bytes(np.random.default_rng(1).integers(0, 256, 4000, np.uint8).tobytes())
    corrupt = write_song(audio / "corrupt.flac", seconds=1.0, format="FLAC")
    raw = bytearray(corrupt.read_bytes())
    raw[len(raw) // 4:] = np.random.default_rng(0).integers(0, 256, len(raw) - len(raw) // 4, np.uint8).tobytes()
    corrupt.write_bytes(bytes(raw))
    cut(write_song(audio / "cut_short.flac", seconds=1.0, format="FLAC"), 0.4)
    os.symlink(audio / "loop_b.wav", audio / "loop_a.wav")
    os.symlink(audio / "loop_a.wav", audio / "loop_b.wav")
    os.symlink(audio / "gone" / "song.wav", audio / "moved_away.wav")
    write_song(audio / "album.wav" / "inside.wav", freq=600)  # a folder named like a song is just a folder
    (audio / "notes.txt").write_text("recorded in my bedroom\n")
    if "bad_sector.wav" in BAD:
        os.symlink("/proc/self/mem", audio / "bad_sector.wav")


@pytest.fixture(scope="module")
def corpus(tiny_root_readonly, tmp_path_factory):
    base = tmp_path_factory.mktemp("corpus")
    audio, out = base / "audio", base / "tensors"
    write_song(audio / "good.wav")
    write_song(audio / "mono.wav", 44100, 1)
    write_song(audio / UNICODE, freq=500)
    args = ("preprocess", "--checkpoint-dir", tiny_root_readonly, "--audio-dir", audio, "--tensor-output", out,
            "--max-duration", MAX_DURATION)
    code, _ = run_cli(*args)
    assert code == 0
    earlier = snapshot(out)
    write_corpus(audio)
    reads = []  # (file name, frames asked for) of every decode
    real_read = sf.read

    def spy(file, frames=-1, *a, **kw):
        reads.append((Path(os.fsdecode(file)).name, frames))  # libsndfile gets bytes paths on POSIX
        return real_read(file, frames, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sf, "read", spy)
        code, text = run_cli(*args)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    return SimpleNamespace(audio=audio, out=out, code=code, text=text, manifest=manifest, earlier=earlier,
                           reads=reads, info={i["source"]: i for i in manifest["sample_info"]},
                           skipped={s["file"]: s["reason"] for s in manifest["skipped"]})


def test_the_run_succeeds_with_every_good_song_and_no_other(corpus):
    assert corpus.code == 0, corpus.text
    assert "Traceback" not in corpus.text
    assert sorted(corpus.info) == sorted(GOOD)
    assert sorted(corpus.skipped) == sorted(BAD)
    assert f"Done: {len(GOOD)} sample(s) ready in {corpus.out} ({len(GOOD) - len(EARLIER)} processed, " \
           f"{len(EARLIER)} unchanged, {len(BAD)} skipped)" in corpus.text


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_file_is_skipped_with_its_reason_and_fix(corpus, name):
    reason = corpus.skipped[name]
    expected = BAD[name]
    if expected.startswith("re:"):
        import re

        assert re.fullmatch(expected[3:], reason), reason
    else:
        assert reason == expected
    assert "\n" not in reason
    # the summary names the file on a "skipped" row, and the progress line names it with the problem
    assert any(line.startswith(f"| {name[:20]}") and "skipped" in line for line in corpus.text.splitlines()), \
        corpus.text
    assert not (corpus.out / f"{Path(name).stem}.pt").exists()


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_file_becomes_a_sample(corpus, name):
    rate, channels, used = GOOD[name]
    info = corpus.info[name]
    assert (info["source_rate"], info["source_channels"]) == (rate, channels)
    if used is not None:
        assert info["used_seconds"] == pytest.approx(used, abs=1e-3)
    sample = torch.load(corpus.out / info["file"], map_location="cpu", weights_only=True)
    frames = round(info["used_seconds"] * 48000) // 1920  # whole latent frames (1920 samples at 48 kHz)
    assert sample["target_latents"].shape == (frames, 64) and torch.isfinite(sample["target_latents"]).all()
    assert sample["context_latents"].shape == (frames, 128)
    assert sample["metadata"]["filename"] == Path(name).name


def test_earlier_outputs_are_untouched(corpus):
    now = snapshot(corpus.out)
    for rel, (digest, mtime) in corpus.earlier.items():
        if rel.endswith(".pt"):
            assert now[rel] == (digest, mtime), rel  # not rewritten, not even touched


def test_two_hour_file_is_cut_at_max_duration_reading_only_that(corpus):
    info = corpus.info["two_hours.wav"]
    assert info["duration"] == 7200.0 and info["truncated"] is True
    assert info["used_seconds"] == MAX_DURATION
    frames = [f for name, f in corpus.reads if name == "two_hours.wav"]
    # one decode of the first max-duration seconds (+1 s for the resampler), never the 2 hours
    assert frames == [int((MAX_DURATION + 1) * 16000)]
    assert os.stat(corpus.audio / "two_hours.wav").st_blocks * 512 < 10 * 2**20  # generated sparse


@pytest.mark.parametrize("name,promised,used", [("cut_short.wav", 1.0, 0.4), ("cut_short.mp3", 1.0, 0.4)])
def test_truncated_file_uses_what_is_there_and_says_so(corpus, name, promised, used):
    info = corpus.info[name]
    assert info["duration"] == pytest.approx(info["used_seconds"], abs=1e-3)  # its real length, not the header's
    assert info["used_seconds"] < 0.5 and info["truncated"] is False
    note = info["note"]
    assert note.startswith(f"truncated file: its header promises {promised:.2f} s but only ")
    assert note.endswith("could be decoded; that part is used (re-export or re-download the song to train on all "
                         "of it)")
    assert any(line.startswith(f"| {name}") and "processed" in line for line in corpus.text.splitlines())
    caption = torch.load(corpus.out / info["file"], weights_only=True)["metadata"]["duration"]
    assert caption == pytest.approx(info["used_seconds"], abs=1e-3)


def test_a_rerun_keeps_every_sample_and_every_reason(corpus, tiny_root_readonly):
    before = snapshot(corpus.out)
    code, text = run_cli("preprocess", "--checkpoint-dir", tiny_root_readonly, "--audio-dir", corpus.audio,
                         "--tensor-output", corpus.out, "--max-duration", MAX_DURATION)
    assert code == 0 and f"(0 processed, {len(GOOD)} unchanged, {len(BAD)} skipped)" in text
    manifest = json.loads((corpus.out / "manifest.json").read_text(encoding="utf-8"))
    assert {s["file"]: s["reason"] for s in manifest["skipped"]} == corpus.skipped
    after = snapshot(corpus.out)
    assert {k: v for k, v in after.items() if k.endswith(".pt")} == \
        {k: v for k, v in before.items() if k.endswith(".pt")}

"""train.py dataset: sidecars, tags, detection, sources, reruns, review, --set, --show-prompt (issue 18).

Real components only: songs synthesized with numpy and written by soundfile, tags written by mutagen,
librosa doing the analysis."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from synth_songs import SongSpec, song_set, write_song  # noqa: E402

from sidestep.cli.main import main  # noqa: E402
from sidestep.data.analysis import analyse, normalise_key, parse_bpm  # noqa: E402
from sidestep.data.dataset_builder import build_dataset, review_rows, set_field, show_prompt, strip_lrc  # noqa: E402
from sidestep.data.metadata import read_dataset_json  # noqa: E402
from sidestep.data.prompts import genre_subset, sample_prompt  # noqa: E402
from sidestep.errors import SidestepError  # noqa: E402


def _entries(path: Path) -> dict:
    return {s["filename"]: s for s in json.loads(path.read_text())["samples"]}


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> Path:
    """a.wav: caption sidecar, nothing else; b.flac: Vorbis tags; c.wav: ID3 tags; d.wav: .lrc lyrics;
    v.wav: a sung line, no lyrics; junk.wav: not audio."""
    import mutagen.flac
    import mutagen.wave
    from mutagen.id3 import TBPM, TCON, TIT2, TKEY, TPE1, USLT

    d = tmp_path_factory.mktemp("songs")
    write_song(d / "a.wav", SongSpec(bpm=120, tonic=7, mode="major", seconds=8))
    (d / "a.caption.txt").write_text("bright pop with piano\n")
    write_song(d / "b.flac", SongSpec(bpm=90, tonic=9, mode="minor", seconds=4, seed=1))
    flac = mutagen.flac.FLAC(str(d / "b.flac"))
    flac["title"], flac["artist"], flac["genre"] = "Bee", "The Tests", "synthwave"
    flac["bpm"], flac["initialkey"], flac["lyrics"] = "128", "Am", "tagged words\nsecond line"
    flac.save()
    write_song(d / "c.wav", SongSpec(bpm=100, tonic=2, mode="major", seconds=4, seed=2))
    wave = mutagen.wave.WAVE(str(d / "c.wav"))
    wave.add_tags()
    for frame in (TIT2(encoding=3, text="Sea"), TPE1(encoding=3, text="Id Three"), TCON(encoding=3, text="lofi"),
                  TBPM(encoding=3, text="84"), TKEY(encoding=3, text="F#m"),
                  USLT(encoding=3, lang="eng", desc="", text="id3 lyrics")):
        wave.tags.add(frame)
    wave.save()
    write_song(d / "d.wav", SongSpec(bpm=140, tonic=0, mode="minor", seconds=4, seed=3))
    (d / "d.lrc").write_text("[ar:Someone]\n[ti:Dee]\n[00:01.00][00:09.00]hello world\n"
                             "[00:03.50]<00:03.50>second <00:04.00>line\n[Chorus]\n")
    write_song(d / "v.wav", SongSpec(bpm=110, tonic=5, mode="major", seconds=8, timbre="pluck", seed=2, vocals=True))
    (d / "junk.wav").write_bytes(b"this is not audio at all")
    return d


@pytest.fixture(scope="module")
def built(songs, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("json") / "dataset.json"
    return out, build_dataset(songs, out, custom_tag="zzz", tag_position="append", genre_ratio=50)


def test_every_field_from_its_best_source(built):
    out, report = built
    parsed = read_dataset_json(out)  # the reader preprocess uses accepts it
    assert {s.key for s in parsed.samples} == {"a.wav", "b.flac", "c.wav", "d.wav", "v.wav"}
    assert (parsed.custom_tag, parsed.tag_position, parsed.genre_ratio) == ("zzz", "append", 50.0)
    e = _entries(out)
    a, b, c, d = e["a.wav"], e["b.flac"], e["c.wav"], e["d.wav"]
    assert (a["caption"], a["caption_source"]) == ("bright pop with piano", "sidecar")
    assert (a["bpm"], a["bpm_source"]) == (120, "detected") and 0 <= a["bpm_confidence"] <= 1
    assert (a["keyscale"], a["keyscale_source"]) == ("G major", "detected")
    assert (a["duration"], a["duration_source"]) == (8.0, "detected")
    assert "lyrics" not in a and (a["is_instrumental"], a["is_instrumental_source"]) == (True, "detected")
    v = e["v.wav"]
    assert (v["is_instrumental"], v["is_instrumental_source"]) == (False, "detected") and v["vocal_score"] >= 0.2
    assert (b["bpm"], b["bpm_source"], b["keyscale"], b["keyscale_source"]) == (128, "tag", "A minor", "tag")
    assert "bpm_confidence" not in b
    assert (b["genre"], b["title"], b["artist"]) == ("synthwave", "Bee", "The Tests")
    assert (b["lyrics"], b["lyrics_source"], b["is_instrumental"]) == ("tagged words\nsecond line", "tag", False)
    assert (c["bpm"], c["keyscale"], c["genre"], c["lyrics"]) == (84, "F# minor", "lofi", "id3 lyrics")
    assert c["title_source"] == c["lyrics_source"] == "tag"
    assert (d["lyrics"], d["lyrics_source"]) == ("hello world\nsecond line\n[Chorus]", "sidecar")
    assert report.unreadable and report.unreadable[0][0] == "junk.wav" and "not a readable audio" in report.unreadable[0][1]
    assert "junk.wav" not in e


def test_rerun_keeps_user_values_and_overwrite_refills(built, songs):
    out, _ = built
    data = json.loads(out.read_text())
    for s in data["samples"]:
        if s["filename"] == "a.wav":
            s["bpm"] = 99  # hand-edited: bpm_source still says detected; a value without source is the user's
            del s["bpm_source"], s["bpm_confidence"]
            s["genre"] = "my genre"
    out.write_text(json.dumps(data))
    report = build_dataset(songs, out)
    a = _entries(out)["a.wav"]
    assert (a["bpm"], a["bpm_source"], a["genre"], a["genre_source"]) == (99, "user", "my genre", "user")
    assert report.filled == {} and report.added == []
    assert read_dataset_json(out).custom_tag == "zzz"  # settings not given are kept
    build_dataset(songs, out, overwrite=("bpm",))
    a = _entries(out)["a.wav"]
    assert (a["bpm"], a["bpm_source"]) == (120, "detected") and a["genre"] == "my genre"
    set_field(out, "a.wav", "lyrics", "la la")  # lyrics, but the detected "instrumental" is not replaced: flagged
    build_dataset(songs, out)
    assert _entries(out)["a.wav"]["is_instrumental"] is True
    assert "marked instrumental" in {r.song: r for r in review_rows(out)}["a.wav"].doubts["is_instrumental"]
    set_field(out, "a.wav", "is_instrumental", "")  # cleared: the user's lyrics make it a sung song
    build_dataset(songs, out)
    a = _entries(out)["a.wav"]
    assert (a["lyrics_source"], a["is_instrumental"], a["is_instrumental_source"]) == ("user", False, "user")
    set_field(out, "a.wav", "lyrics", "")
    set_field(out, "a.wav", "is_instrumental", "")
    assert "lyrics" not in _entries(out)["a.wav"] or _entries(out)["a.wav"]["lyrics"] is None


def test_set_field_and_review_flags(built):
    out, _ = built
    set_field(out, "a.wav", "keyscale", "ebm")
    set_field(out, "a.wav", "lyrics", "")
    set_field(out, "a.wav", "is_instrumental", "")  # cleared: neither lyrics nor a verdict
    assert "unknown whether sung" in {r.song: r for r in review_rows(out)}["a.wav"].doubts["is_instrumental"]
    set_field(out, "a", "is_instrumental", "no")
    a = _entries(out)["a.wav"]
    assert (a["keyscale"], a["keyscale_source"]) == ("Eb minor", "user") and "keyscale_confidence" not in a
    rows = {r.song: r for r in review_rows(out)}
    assert rows["a.wav"].doubts == {"lyrics": "vocal song without lyrics"}
    assert rows["a.wav"].cells["keyscale"] == ("Eb minor", "user")
    assert rows["b.flac"].doubts == {}
    assert "sung voice detected" in rows["v.wav"].doubts["lyrics"]
    with pytest.raises(SidestepError, match="not a key"):
        set_field(out, "a.wav", "keyscale", "H major")
    with pytest.raises(SidestepError, match="no entry for song"):
        set_field(out, "zzz.wav", "bpm", "120")
    data = json.loads(out.read_text())
    data["samples"][0]["bpm_confidence"], data["samples"][0]["bpm_source"] = 0.01, "detected"
    out.write_text(json.dumps(data))
    assert "low confidence" in {r.song: r for r in review_rows(out)}[data["samples"][0]["filename"]].doubts["bpm"]


def test_show_prompt_is_preprocess_prompt(built, songs, capsys):
    out, _ = built
    prompt, lyrics = show_prompt(out, "c.wav", songs)
    files = ["a.wav", "b.flac", "c.wav", "d.wav", "junk.wav", "v.wav"]  # what preprocess scans, in its order
    in_subset = files.index("c.wav") in genre_subset(len(files), 50)
    _, expected = sample_prompt(_entries(out)["c.wav"].get("caption") or "c", "lofi", None, in_subset, "zzz",
                                "append", 84, None, "F# minor", 4.0)
    assert prompt == expected and lyrics == "id3 lyrics"
    assert "- keyscale: F# minor\n" in prompt and "zzz" in prompt
    assert main(["--plain", "dataset", "--out", str(out), "--audio-dir", str(songs), "--show-prompt", "c.wav"]) == 0
    assert expected in capsys.readouterr().out


def test_cli_build_review_set_and_errors(songs, tmp_path, capsys):
    out = tmp_path / "ds.json"
    assert main(["--plain", "dataset", "--audio-dir", str(songs), "--out", str(out), "--tag", "trig",
                 "--tag-position", "replace", "--genre-ratio", "20"]) == 0
    text = capsys.readouterr().out
    assert "skipped junk.wav: not a readable audio file" in text and "5 song(s), 5 new" in text
    assert read_dataset_json(out).tag_position == "replace"
    assert main(["--plain", "dataset", "--out", str(out), "--tag", "other", "--tag-position", "append"]) == 0
    assert (read_dataset_json(out).custom_tag, read_dataset_json(out).tag_position) == ("other", "append")
    assert main(["--plain", "dataset", "--out", str(out), "--set", "b.flac:bpm=131"]) == 0
    assert _entries(out)["b.flac"]["bpm"] == 131
    assert main(["--plain", "dataset", "--out", str(out), "--review"]) == 0
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if "| bpm " in line and "131" in line)
    assert "| user " in row and "Sources: user" in text and "a.wav" in text
    assert main(["--plain", "dataset", "--out", str(out), "--set", "b.flac=120"]) == 2
    assert "SONG:FIELD=VALUE" in capsys.readouterr().out
    assert main(["--plain", "dataset", "--out", str(tmp_path / "none.json"), "--review"]) == 2
    assert "build it first" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["dataset", "--out", str(out), "--overwrite", "colour"])  # not a field: argparse refuses it


def test_text_normalisation():
    assert [normalise_key(k) for k in ("Am", "F#m", "Bbmaj", "a minor", "8A", "8B", "Db", "C# minor", "xyz", "")] == \
        ["A minor", "F# minor", "Bb major", "A minor", "A minor", "C major", "C# major", "C# minor", None, None]
    assert [parse_bpm(t) for t in ("120", "128.6 BPM", "0", "fast", None)] == [120, 129, None, None, None]
    assert strip_lrc("[length:03:00]\n[01:02.50]la la\n[Verse]\n<00:01.00>x") == "la la\n[Verse]\nx"


def test_accuracy_floor(tmp_path):
    """A looser floor than the bench's targets (bench/dataset_accuracy.py): 8 songs of 8 s."""
    specs = song_set(8, seconds=8.0, seed=7)
    bpm_ok = key_ok = 0
    for i, spec in enumerate(specs):
        result = analyse(write_song(tmp_path / f"s{i}.wav", spec))
        bpm_ok += abs(result.bpm / spec.bpm - 1) <= 0.02
        key_ok += result.keyscale == spec.keyscale
    assert bpm_ok >= 6 and key_ok >= 5, (bpm_ok, key_ok)


def test_transcription_plumbing_with_a_tiny_random_whisper(tmp_path, monkeypatch, capsys):
    from tiny_whisper import write_tiny_whisper

    from sidestep.data.transcribe import whisper_transcriber

    model = write_tiny_whisper(tmp_path / "whisper")
    songs = tmp_path / "songs"
    write_song(songs / "sung.wav", SongSpec(bpm=100, tonic=0, mode="major", seconds=3))
    write_song(songs / "kept.wav", SongSpec(bpm=100, tonic=0, mode="major", seconds=3, seed=1))
    (songs / "kept.lyrics.txt").write_text("my own words")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text, language = whisper_transcriber(str(model), "cpu")(songs / "sung.wav")
    assert text and language in ("en", "de")
    out = tmp_path / "ds.json"
    assert main(["--plain", "dataset", "--audio-dir", str(songs), "--out", str(out), "--transcribe", str(model),
                 "--device", "cpu"]) == 0
    sung, kept = _entries(out)["sung.wav"], _entries(out)["kept.wav"]
    assert (sung["lyrics"], sung["lyrics_source"]) == (text, "transcribed")  # deterministic model, same transcript
    assert (sung["language"], sung["language_source"]) == (language, "transcribed")
    assert (sung["is_instrumental"], sung["is_instrumental_source"]) == (False, "transcribed")
    assert (kept["lyrics"], kept["lyrics_source"]) == ("my own words", "sidecar") and "language" not in kept
    assert main(["--plain", "dataset", "--audio-dir", str(songs), "--out", str(out), "--transcribe",
                 str(tmp_path / "no-such-model")]) == 2
    err = capsys.readouterr().out.strip().splitlines()[-1]
    assert err.startswith("error: --transcribe") and "cannot load the speech-recognition model" in err


def test_wizard_builds_reviews_and_edits_the_json(songs, tmp_path, tiny_root_readonly):
    import subprocess

    from wizard_pty import TRAIN_PY, wizard_env, write_settings

    home = tmp_path / "home"
    write_settings(home, tiny_root_readonly)
    out = tmp_path / "wiz.json"
    script = "\n".join(["dataset", "",  # menu; wizard mode: basic
                        str(songs), str(out), "trig",  # audio-dir, out, tag
                        "",  # start building? yes
                        "edit", "c.wav", "bpm", "131",  # review: edit a field
                        "edit", "c.wav", "keyscale", "H major",  # refused: not a key; the review goes on
                        "prompt", "c.wav",
                        "done", "quit"]) + "\n"
    result = subprocess.run([sys.executable, str(TRAIN_PY), "--plain"], input=script, capture_output=True,
                            text=True, cwd=tmp_path, env=wizard_env(home), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    c = _entries(out)["c.wav"]
    assert (c["bpm"], c["bpm_source"], c["keyscale"]) == (131, "user", "F# minor")
    assert read_dataset_json(out).custom_tag == "trig"
    assert "not a key" in result.stdout and "| bpm " in result.stdout
    assert "# Caption\ntrig, " in result.stdout and "- bpm: 131\n" in result.stdout
    assert f"--dataset-json {out}" in " ".join(result.stdout.split())  # the hint may be wrapped

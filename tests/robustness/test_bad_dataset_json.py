"""Dataset JSON as users write it by hand: every broken file is refused before anything is written, in one
line naming the file, the place and the fix; odd but valid files are used, with what they got wrong said."""

import json
from types import SimpleNamespace

import pytest
import torch

from .support import error_line, run_cli, snapshot, write_song

FIX = "fix the dataset JSON"


@pytest.fixture(scope="module")
def folder(tiny_root_readonly, tmp_path_factory):
    """Two songs preprocessed once with a good dataset JSON: the output every failing run must leave alone."""
    base = tmp_path_factory.mktemp("djson")
    audio, out = base / "audio", base / "tensors"
    write_song(audio / "a.wav")
    write_song(audio / "b.wav", freq=550)
    good = base / "good.json"
    good.write_text(json.dumps({"samples": [{"filename": "a.wav", "caption": "first"},
                                            {"filename": "b.wav", "caption": "second"}]}))
    args = ["preprocess", "--checkpoint-dir", tiny_root_readonly, "--audio-dir", audio, "--tensor-output", out]
    code, text = run_cli(*args, "--dataset-json", good)
    assert code == 0, text
    return SimpleNamespace(base=base, audio=audio, out=out, args=args)


def _content(sample: str) -> bytes:
    return sample.encode()


BROKEN = {  # id -> (file bytes, the message after "<path>: ")
    "malformed": (b'{"samples": [{"filename": "a.wav",}]}',
                  f"invalid JSON at line 1, column 35 (Expecting property name enclosed in double quotes); {FIX}"),
    "truncated": (b'{"samples": [{"filename": "a.wav", "caption": "fir',
                  f"invalid JSON at line 1, column 47 (Unterminated string starting at); {FIX}"),
    "empty file": (b"", f"invalid JSON at line 1, column 1 (Expecting value); {FIX}"),
    "wrong type: bpm list": (_content(json.dumps({"samples": [{"filename": "a.wav", "bpm": [120]}]})),
                             f"samples[0].bpm must be a number or text, got [120]; {FIX}"),
    "wrong type: caption number": (_content(json.dumps({"samples": [{"filename": "a.wav", "caption": 5}]})),
                                   f"samples[0].caption must be text, got 5; {FIX}"),
    "wrong type: instrumental text": (
        _content(json.dumps({"samples": [{"filename": "a.wav", "is_instrumental": "yes"}]})),
        f"samples[0].is_instrumental must be true or false, got 'yes'; {FIX}"),
    "wrong type: samples object": (_content(json.dumps({"samples": {"a.wav": {}}})),
                                   "'samples' must be a list of sample objects (or the file a bare list of them); "
                                   + FIX),
    "wrong type: entry is text": (_content(json.dumps({"samples": ["a.wav"]})),
                                  f"samples[0] must be an object with a filename, got str; {FIX}"),
    "wrong type: genre ratio": (_content(json.dumps({"metadata": {"genre_ratio": "half"}, "samples": []})),
                                f"metadata.genre_ratio must be a percentage from 0 to 100, got 'half'; {FIX}"),
    "missing key: samples": (_content(json.dumps({"metadata": {"name": "x"}})),
                             "'samples' must be a list of sample objects (or the file a bare list of them); " + FIX),
    "missing key: filename": (_content(json.dumps({"samples": [{"caption": "which file?"}]})),
                              f"samples[0] has neither 'filename' nor 'audio_path', so it names no audio file; {FIX}"),
    "duplicate key": (b'{"samples": [{"filename": "a.wav", "caption": "one", "caption": "two"}]}',
                      "key 'caption' appears twice in one object, so it is unclear which value counts; keep one and "
                      + FIX),
    "non-UTF-8 bytes": ('{"samples": [{"filename": "a.wav", "caption": "café"}]}'.encode("latin-1"),
                        "not UTF-8 text; save the dataset JSON as UTF-8"),
    "UTF-16": ('{"samples": []}'.encode("utf-16"), "not UTF-8 text; save the dataset JSON as UTF-8"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_dataset_json_is_one_line_and_writes_nothing(folder, tmp_path, case):
    content, message = BROKEN[case]
    path = tmp_path / "dataset.json"
    path.write_bytes(content)
    before = snapshot(folder.out)
    code, text = run_cli(*folder.args, "--dataset-json", path)
    assert code == 2
    assert error_line(text) == f"{path}: {message}"
    assert snapshot(folder.out) == before  # the earlier tensors and manifest are untouched


def test_missing_dataset_json_is_named(folder, tmp_path):
    before = snapshot(folder.out)
    code, text = run_cli(*folder.args, "--dataset-json", tmp_path / "nowhere.json")
    assert code == 2
    assert error_line(text) == f"{tmp_path / 'nowhere.json'}: dataset JSON not found; check --dataset-json"
    assert snapshot(folder.out) == before


def test_odd_but_valid_entries_are_used_and_reported(folder, tmp_path):
    """Entries pointing nowhere, a second entry for the same song, 100k characters of lyrics, a BOM."""
    lyrics = ("[Verse]\n" + "la " * 40_000)[:100_000]
    data = {"samples": [{"filename": "a.wav", "caption": "first", "lyrics": lyrics},
                        {"filename": "ghost.wav", "caption": "exported later"},
                        {"audio_path": "C:\\Users\\me\\Music\\gone\\old.flac"},
                        {"filename": "a.wav", "caption": "a second opinion"},
                        {"filename": "b.wav", "caption": "ünïcødé 歌 🎵"}]}
    path = tmp_path / "dataset.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(data, ensure_ascii=False).encode())  # as Notepad saves it
    out = tmp_path / "tensors"
    code, text = run_cli(*folder.args[:-1], out, "--dataset-json", path)
    assert code == 0, text
    lines = text.splitlines()
    assert "dataset JSON entry 'ghost.wav' matches no audio file in --audio-dir; fix its filename or audio_path, " \
           "or remove it" in lines
    assert "dataset JSON entry 'old.flac' matches no audio file in --audio-dir; fix its filename or audio_path, " \
           "or remove it" in lines
    assert "dataset JSON entry 'a.wav' is a duplicate: an earlier entry describes that file and is the one used; " \
           "remove one of them" in lines
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["samples"] == ["a.pt", "b.pt"]
    assert manifest["unmatched_json_entries"] == ["ghost.wav", "old.flac"]
    assert manifest["duplicate_json_entries"] == ["a.wav"]
    a = torch.load(out / "a.pt", weights_only=True)
    assert a["metadata"]["caption"] == "first" and a["metadata"]["lyrics"] == lyrics  # kept whole in the metadata
    assert a["encoder_hidden_states"].shape == (512 + 1 + 256, 64)  # the embedding is cut at 512 tokens
    b = torch.load(out / "b.pt", weights_only=True)
    assert b["metadata"]["caption"] == "ünïcødé 歌 🎵"

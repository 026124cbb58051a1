"""Accuracy of `train.py dataset`'s detection on synthesized songs whose truth is known.

    uv run python bench/dataset_accuracy.py [--songs 48] [--seconds 30] [--seed 0]

Each song (tests/synth_songs.py) is a drum pattern at a known tempo (70-170 BPM), a bass line
and a one-chord-per-bar progression in a known key (all 24 keys in turn), played on one of three
instrument-like timbres (piano-like decaying partials, detuned pad, plucked string), with a
melody and noise at -40..-22 dB; one in five is in 3/4; half of them (i % 4 in 1, 2) carry a sung line
(formant-filtered, with vibrato and glides). Prints a line per song, then one JSON
line: BPM within 2% (octave errors, i.e. x2 / x0.5 / x1.5 / x2/3 within 2%, counted apart), key/scale
exact (relative major/minor and fifth confusions counted apart), time signature right / left out,
sung vs instrumental right / wrong / unknown,
and how many of the wrong values the review flags as doubtful.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from synth_songs import NOTE_NAMES, song_set, write_song  # noqa: E402

from sidestep.data.analysis import BPM_DOUBTFUL, KEY_DOUBTFUL, analyse, detect_vocals, load_mono  # noqa: E402


def _key_relation(truth: str, found: str | None) -> str:
    if found is None:
        return "none"
    if found == truth:
        return "exact"
    (tn, tm), (fn, fm) = truth.split(), found.split()
    shift = (NOTE_NAMES.index(fn) - NOTE_NAMES.index(tn)) % 12
    if tm != fm and ((tm == "major" and shift == 9) or (tm == "minor" and shift == 3)):
        return "relative"
    if tm == fm and shift in (5, 7):
        return "fifth"
    if tn == fn:
        return "parallel"
    return "other"


def _machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), None) if Path("/proc/cpuinfo").is_file() else None
    return f"{platform.machine()} CPU ({model or platform.processor() or 'unknown model'}), {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    specs = song_set(args.songs, seconds=args.seconds, seed=args.seed, vocals=True)
    counts = dict(bpm_ok=0, bpm_octave=0, bpm_other=0, key_exact=0, key_relative=0, key_fifth=0, key_parallel=0,
                  key_other=0, meter_right=0, meter_wrong=0, meter_left_out=0, wrong_bpm_flagged=0,
                  wrong_key_flagged=0, right_bpm_flagged=0, right_key_flagged=0, vocals_right=0, vocals_wrong=0,
                  vocals_unknown=0)
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, spec in enumerate(specs):
            path = write_song(Path(tmp) / f"song{i}.wav", spec)
            start = time.perf_counter()
            result = analyse(path)
            seconds.append(time.perf_counter() - start)
            ratio = (result.bpm or 0) / spec.bpm
            if abs(ratio - 1) <= 0.02:
                bpm = "ok"
            elif any(abs(ratio - r) <= 0.02 * r for r in (2.0, 0.5, 1.5, 2 / 3)):
                bpm = "octave"
            else:
                bpm = "other"
            counts[f"bpm_{bpm}"] += 1
            bpm_doubtful = result.bpm_confidence < BPM_DOUBTFUL
            counts["right_bpm_flagged" if bpm == "ok" else "wrong_bpm_flagged"] += bpm_doubtful
            key = _key_relation(spec.keyscale, result.keyscale)
            counts[f"key_{key}"] += 1
            key_doubtful = result.key_confidence < KEY_DOUBTFUL
            counts["right_key_flagged" if key == "exact" else "wrong_key_flagged"] += key_doubtful
            meter = "left_out" if result.timesignature is None else \
                "right" if result.timesignature == str(spec.meter) else "wrong"
            counts[f"meter_{meter}"] += 1
            sung, score = detect_vocals(load_mono(path)[0])
            vocals = "unknown" if sung is None else "right" if sung == spec.vocals else "wrong"
            counts[f"vocals_{vocals}"] += 1
            print(f"song{i:02d} {spec.timbre:5s} {'sung' if spec.vocals else 'inst'} -> {vocals} ({score:.2f}) | bpm {spec.bpm:6.1f} -> {result.bpm} ({bpm}, conf "
                  f"{result.bpm_confidence:.2f}) | key {spec.keyscale:8s} -> {result.keyscale} ({key}, conf "
                  f"{result.key_confidence:.3f}) | meter {spec.meter} -> {result.timesignature} ({meter})",
                  flush=True)
    n = len(specs)
    summary = dict(bench="dataset_accuracy", songs=n, seconds_per_song=args.seconds, seed=args.seed,
                   bpm_within_2pct=round(counts["bpm_ok"] / n, 3), bpm_octave_errors=counts["bpm_octave"],
                   bpm_other_errors=counts["bpm_other"], key_exact=round(counts["key_exact"] / n, 3),
                   key_relative_errors=counts["key_relative"], key_fifth_errors=counts["key_fifth"],
                   key_parallel_errors=counts["key_parallel"], key_other_errors=counts["key_other"],
                   meter_right=counts["meter_right"], meter_wrong=counts["meter_wrong"],
                   meter_left_out=counts["meter_left_out"], vocals_right=counts["vocals_right"],
                   vocals_wrong=counts["vocals_wrong"], vocals_unknown=counts["vocals_unknown"],
                   flagged=dict(wrong_bpm=counts["wrong_bpm_flagged"], right_bpm=counts["right_bpm_flagged"],
                                wrong_key=counts["wrong_key_flagged"], right_key=counts["right_key_flagged"]),
                   analysis_s_per_song=round(sum(seconds[1:]) / max(1, n - 1), 2),
                   machine=_machine())
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

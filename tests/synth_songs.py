"""Synthesized songs whose tempo, key and meter are known (for tests and bench/dataset_accuracy.py).

A song is a drum pattern (kick, snare, hi-hat), a bass line on the chord roots, a chord
instrument (piano-like decaying partials, a detuned pad or a plucked string) playing a
one-chord-per-bar progression of the key, a melody on scale tones, and some noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)
# Scale degrees (0-based) of each bar's chord root, and whether the chord is minor.
MAJOR_PROGRESSIONS = (((0, False), (4, False), (5, True), (3, False)),  # I V vi IV
                      ((0, False), (3, False), (4, False), (0, False)))  # I IV V I
MINOR_PROGRESSIONS = (((0, True), (5, False), (2, False), (6, False)),  # i VI III VII
                      ((0, True), (3, True), (4, False), (0, True)))  # i iv V i (harmonic V)


@dataclass(frozen=True)
class SongSpec:
    bpm: float
    tonic: int  # 0 = C
    mode: str  # "major" | "minor"
    meter: int = 4
    seconds: float = 8.0
    timbre: str = "piano"  # piano | pad | pluck
    noise_db: float = -30.0  # noise level relative to the mix peak
    seed: int = 0
    vocals: bool = False  # a sung line: formant-filtered harmonic source with vibrato and glides

    @property
    def keyscale(self) -> str:
        return f"{NOTE_NAMES[self.tonic]} {self.mode}"


def _hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _tone(freq: float, length: int, sr: int, timbre: str, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(length) / sr
    out = np.zeros(length)
    if timbre == "piano":
        for k in range(1, 8):
            out += np.sin(2 * np.pi * freq * k * 1.0005 ** k * t) * np.exp(-t * (2.5 + 1.5 * k)) / k
    elif timbre == "pad":
        for detune in (-0.004, 0.0, 0.004):
            for k in range(1, 6):
                out += np.sin(2 * np.pi * freq * (1 + detune) * k * t + rng.uniform(0, 6.28)) / k ** 1.5
        out *= np.minimum(1.0, t / 0.08)
    else:  # pluck: bright, fast decay
        for k in range(1, 10):
            out += np.sin(2 * np.pi * freq * k * t) * np.exp(-t * (4 + 2 * k)) / k ** 0.8
    fade = np.minimum(1.0, (length - np.arange(length)) / (0.01 * sr))
    return out * fade


def _drum(kind: str, sr: int, rng: np.random.Generator) -> np.ndarray:
    n = int(0.25 * sr)
    t = np.arange(n) / sr
    if kind == "kick":
        freq = 50 + 90 * np.exp(-t * 30)
        return np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.exp(-t * 12) * 1.2
    noise = rng.standard_normal(n)
    if kind == "snare":
        return (0.6 * noise * np.exp(-t * 25) + 0.5 * np.sin(2 * np.pi * 185 * t) * np.exp(-t * 20)) * 0.7
    hat = np.diff(noise, prepend=0.0)  # crude high-pass
    return hat * np.exp(-t * 90) * 0.25


def _place(track: np.ndarray, sound: np.ndarray, at: int) -> None:
    if at >= len(track):
        return
    end = min(len(track), at + len(sound))
    track[at:end] += sound[:end - at]


def synth_song(spec: SongSpec, sr: int = 22_050) -> np.ndarray:
    """Mono float32 in [-1, 1]."""
    rng = np.random.default_rng(spec.seed)
    total = int(spec.seconds * sr)
    beat = 60.0 / spec.bpm
    drums, harmony, bass, melody = (np.zeros(total) for _ in range(4))
    scale = MAJOR_SCALE if spec.mode == "major" else MINOR_SCALE
    progressions = MAJOR_PROGRESSIONS if spec.mode == "major" else MINOR_PROGRESSIONS
    progression = progressions[spec.seed % len(progressions)]
    kick, snare, hat = (_drum(k, sr, rng) for k in ("kick", "snare", "hat"))
    n_beats = int(spec.seconds / beat) + 1
    base = 48 + spec.tonic  # chords around C3..B3
    for b in range(n_beats):
        at = int(round(b * beat * sr))
        pos = b % spec.meter
        if spec.meter == 4:
            _place(drums, kick if pos in (0, 2) else snare, at)
        else:
            _place(drums, kick if pos == 0 else 0.6 * snare, at)
        _place(drums, hat, at)
        _place(drums, 0.6 * hat, at + int(beat * sr / 2))
        bar = b // spec.meter
        degree, minor = progression[bar % len(progression)]
        root = base + scale[degree]
        if spec.mode == "minor" and degree == 4:  # harmonic-minor V: major chord
            minor = False
        third = 3 if minor else 4
        if pos == 0:
            length = int(spec.meter * beat * sr)
            chord = sum(_tone(_hz(root + iv), length, sr, spec.timbre, rng) for iv in (0, third, 7, 12))
            _place(harmony, chord, at)
            _place(bass, _tone(_hz(root - 12), length, sr, "piano", rng) * 1.5, at)
        # melody: one note per beat, chord tones on the downbeat, scale tones elsewhere
        if pos == 0:
            note = root + 12 + rng.choice([0, third, 7])
        else:
            note = base + 12 + scale[rng.integers(0, 7)]
        _place(melody, _tone(_hz(note), int(beat * sr), sr, "pluck", rng) * 0.6, at)
    mix = drums / max(1e-9, np.abs(drums).max()) * 0.8 + harmony / max(1e-9, np.abs(harmony).max()) * 0.7 \
        + bass / max(1e-9, np.abs(bass).max()) * 0.5 + melody / max(1e-9, np.abs(melody).max()) * 0.4
    if spec.vocals:
        voice = _voice(spec, sr)
        mix = mix / np.abs(mix).max() * 0.8 + voice / max(1e-9, np.abs(voice).max()) * 0.6
    mix /= np.abs(mix).max()
    mix += rng.standard_normal(total) * 10 ** (spec.noise_db / 20)
    return (mix / np.abs(mix).max() * 0.9).astype(np.float32)


def _voice(spec: SongSpec, sr: int) -> np.ndarray:
    """A sung-like line on scale tones: a 24-harmonic source with 5.5 Hz vibrato (+-40 cents) and 60 ms
    glides between notes, through three vowel formants (700, 1220, 2600 Hz); phrases of 4 beats and rests."""
    from scipy.signal import iirpeak, lfilter

    rng = np.random.default_rng(spec.seed + 99)
    total, beat = int(spec.seconds * sr), 60.0 / spec.bpm
    scale = MAJOR_SCALE if spec.mode == "major" else MINOR_SCALE
    f0, amp = np.zeros(total), np.zeros(total)
    for b in range(int(spec.seconds / beat) + 1):
        if (b // 4) % 2 == 0 or rng.random() < 0.5:
            start, end = int(b * beat * sr), min(total, int((b + 1) * beat * sr))
            f0[start:end] = _hz(60 + spec.tonic + scale[rng.integers(0, 7)])  # from C4: the song's key
            amp[start:end] = 1.0
    glide = int(0.06 * sr)
    smooth = np.convolve(f0, np.ones(glide) / glide, mode="same")
    t = np.arange(total) / sr
    freq = np.where(f0 > 0, np.maximum(smooth, 1.0), 0.0) * 2 ** (0.4 / 12 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(freq) / sr
    source = sum(np.sin(k * phase) / k for k in range(1, 25))
    out = np.zeros(total)
    for centre, width, gain in ((700, 110, 1.0), (1220, 120, 0.6), (2600, 160, 0.3)):
        b_, a_ = iirpeak(centre, centre / width, fs=sr)
        out += gain * lfilter(b_, a_, source)
    ramp = int(0.03 * sr)
    return out * np.convolve(amp, np.ones(ramp) / ramp, mode="same")


def write_song(path: Path, spec: SongSpec, sr: int = 22_050) -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), synth_song(spec, sr), sr)
    return path


def song_set(n: int, seconds: float = 20.0, seed: int = 0, vocals: bool = False) -> list[SongSpec]:
    """`n` varied songs: tempi 70-170 BPM, all 24 keys in turn, a fifth of them in 3/4, three timbres; with
    `vocals`, half of them (i % 4 in 1, 2) with a sung line."""
    rng = np.random.default_rng(seed)
    specs = []
    for i in range(n):
        specs.append(SongSpec(bpm=float(np.round(rng.uniform(70, 170), 1)), tonic=int((i * 7) % 12),
                              mode=MODES[i % 2], meter=3 if i % 5 == 4 else 4, seconds=seconds,
                              timbre=("piano", "pad", "pluck")[i % 3], noise_db=float(rng.uniform(-40, -22)),
                              seed=seed * 1000 + i, vocals=vocals and i % 4 in (1, 2)))
    return specs


MODES = ("major", "minor")

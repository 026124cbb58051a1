"""Musical facts from audio (librosa): tempo, key/scale, time signature, duration. No printing.

Every estimate comes with a confidence in [0, 1] so a reviewer can see which values to
check. Keys use the vocabulary of the prompt's `- keyscale:` line: a note name (C, C#, D,
Eb, E, F, F#, G, Ab, A, Bb, B) and `major` or `minor`, e.g. "F# minor".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ANALYSIS_RATE = 22_050
ANALYSIS_SECONDS = 120.0  # the first two minutes are enough for tempo and key, and keep long files fast
_HOP = 256
NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MODES = ("major", "minor")
# Below these confidences a detected value is flagged in the review (calibrated on bench/dataset_accuracy.py).
BPM_DOUBTFUL = 0.25
KEY_DOUBTFUL = 0.08
# detect_vocals: score at or above -> sung, at or below -> instrumental, between -> unknown.
VOCAL_SCORE = 0.2
INSTRUMENTAL_SCORE = 0.05

# Temperley's (Kostka-Payne) key profiles, C major / C minor: on the bench they confuse relative
# major and minor less often than Krumhansl-Kessler's (87% vs 83% on 30 songs).
_MAJOR = np.array([5, 2, 3.5, 2, 4.5, 4, 2, 4.5, 2, 3.5, 1.5, 4])
_MINOR = np.array([5, 2, 3.5, 4.5, 2, 4, 2, 4.5, 3.5, 2, 1.5, 4])


@dataclass(frozen=True)
class Analysis:
    duration: float  # seconds of the whole file
    bpm: int | None
    bpm_confidence: float
    keyscale: str | None
    key_confidence: float
    timesignature: str | None  # "4" or "3" (beats per bar, as the prompt writes it), None when unclear
    timesignature_confidence: float


def load_mono(path: str | Path, seconds: float = ANALYSIS_SECONDS) -> tuple[np.ndarray, float]:
    """(mono float32 at ANALYSIS_RATE, whole-file duration). Raises AudioError with the one-line reason."""
    from sidestep.data.audio import load_audio

    clip = load_audio(path, target_rate=ANALYSIS_RATE, max_duration=seconds)
    return clip.waveform.mean(0).numpy().astype(np.float32), float(clip.original_duration)


def _parabolic(values: np.ndarray, i: int) -> float:
    if 0 < i < len(values) - 1:
        a, b, c = values[i - 1], values[i], values[i + 1]
        denom = a - 2 * b + c
        if denom < 0:
            return i + 0.5 * (a - c) / denom
    return float(i)


def _peak_near(ac: np.ndarray, lag: float, tolerance: float = 0.06) -> float | None:
    lo, hi = int(np.floor(lag * (1 - tolerance))), int(np.ceil(lag * (1 + tolerance)))
    if lo < 1 or hi >= len(ac) - 1:
        return None
    i = lo + int(np.argmax(ac[lo:hi + 1]))
    if i in (lo, hi):  # no local maximum inside the window
        return None
    return _parabolic(ac, i)


def detect_tempo(y: np.ndarray, sr: int = ANALYSIS_RATE) -> tuple[float | None, float, np.ndarray]:
    """(BPM, confidence, onset envelope). librosa's tempogram picks the beat period (its prior
    favours 120 BPM between octave candidates); the onset autocorrelation then refines it to a
    fraction of a frame, using the peak at 4 or 2 beats where the clip is long enough."""
    import librosa

    onset = librosa.onset.onset_strength(y=y, sr=sr, hop_length=_HOP, aggregate=np.median)
    if len(onset) < 8 or not np.any(onset > 0):
        return None, 0.0, onset
    first = float(librosa.feature.tempo(onset_envelope=onset, sr=sr, hop_length=_HOP)[0])
    if not first > 0:
        return None, 0.0, onset
    centred = onset - onset.mean()
    ac = librosa.autocorrelate(centred)
    if ac[0] <= 0:
        return None, 0.0, onset
    ac = ac / ac[0]
    lag0 = 60.0 * sr / _HOP / first
    lag = _peak_near(ac, lag0)
    if lag is None:
        return round(first, 2), 0.0, onset
    for beats in (4, 2):  # a peak several beats away divides the frame error by that many
        far = _peak_near(ac, lag * beats, 0.03)
        if far is not None and far < len(ac) / 2:
            lag = far / beats
            break
    confidence = float(np.clip(ac[int(round(lag))], 0.0, 1.0))
    return 60.0 * sr / _HOP / lag, confidence, onset


def detect_key(y: np.ndarray, sr: int = ANALYSIS_RATE) -> tuple[str | None, float]:
    """(keyscale, confidence): the harmonic part's mean chroma correlated with the 24 rotated
    Temperley profiles; confidence is the margin of the best correlation over the
    second best (0 = a tie)."""
    import librosa

    harmonic = librosa.effects.harmonic(y, margin=2.0)
    chroma = librosa.feature.chroma_cqt(y=harmonic, sr=sr, hop_length=2048)
    profile = chroma.mean(axis=1)
    if not np.any(profile > 0):
        return None, 0.0
    scores = []
    for mode, template in zip(MODES, (_MAJOR, _MINOR)):
        for tonic in range(12):
            scores.append((float(np.corrcoef(profile, np.roll(template, tonic))[0, 1]), tonic, mode))
    scores.sort(reverse=True)
    (best, tonic, mode), (second, _, _) = scores[0], scores[1]
    return f"{NOTE_NAMES[tonic]} {mode}", float(max(0.0, best - second))


def detect_meter(y: np.ndarray, onset: np.ndarray, bpm: float | None, sr: int = ANALYSIS_RATE) -> tuple[str | None, float]:
    """("3" or "4", confidence) from the accent pattern of the low band at the beats; (None, 0)
    when neither grouping stands out. Bars of 4 and 3 are the only ones it tells apart."""
    import librosa

    if not bpm:
        return None, 0.0
    _, beats = librosa.beat.beat_track(onset_envelope=onset, sr=sr, hop_length=_HOP, bpm=bpm, tightness=400)
    if len(beats) < 13:
        return None, 0.0
    spec = np.abs(librosa.stft(y, n_fft=2048, hop_length=_HOP))
    freqs = librosa.fft_frequencies(sr=sr, n_fft=2048)
    bass = spec[freqs < 200].sum(axis=0)
    accent = bass[np.clip(beats, 0, len(bass) - 1)]
    accent = (accent - accent.mean()) / (accent.std() + 1e-9)
    contrast = {}
    for meter in (3, 4):
        best = 0.0
        for phase in range(meter):
            down = accent[phase::meter]
            rest = np.delete(accent, np.arange(phase, len(accent), meter))
            best = max(best, float(down.mean() - rest.mean()))
        contrast[meter] = best
    # In 4/4 the kick often falls on 1 and 3, which also gives a (weaker) grouping by 2.
    winner = max(contrast, key=contrast.get)
    margin = contrast[winner] - contrast[7 - winner]
    if margin < 0.4:
        return None, float(max(margin, 0.0))
    return str(winner), float(min(1.0, margin / 2))


def detect_vocals(y: np.ndarray, sr: int = ANALYSIS_RATE) -> tuple[bool | None, float]:
    """(sung?, score): a voice sings with vibrato, which most instruments do not. pYIN tracks the pitch of the
    harmonic part in three 4 s excerpts; a voiced run of at least 24 frames (0.28 s) counts as vibrato when,
    after removing its slow contour (31-frame median), most of its pitch movement lies at 3.5-8.5 Hz with an
    amplitude of 8-120 cents. The score is the fraction of frames in such runs; None between the two
    thresholds. A heuristic calibrated on synthesized songs only (bench/dataset_accuracy.py): its answer is a
    hint for the review, never lyrics."""
    import librosa
    from scipy.signal import medfilt

    hop = 256
    harmonic = librosa.effects.harmonic(y, margin=2.0)
    span = int(4 * sr)
    centres = [len(harmonic) // 2] if len(harmonic) <= 3 * span else [int(len(harmonic) * f) for f in (0.2, 0.5, 0.8)]
    vibrato = total = 0
    for centre in centres:
        piece = harmonic[max(0, centre - span // 2):centre + span // 2]
        if len(piece) < 4096:
            continue
        f0, voiced, _ = librosa.pyin(piece, fmin=120, fmax=1000, sr=sr, frame_length=2048, hop_length=hop)
        total += len(f0)
        cents = 1200 * np.log2(np.where(voiced, f0, np.nan) / 440.0)
        frames = np.flatnonzero(voiced)
        for run in np.split(frames, np.flatnonzero(np.diff(frames) > 1) + 1) if len(frames) else []:
            if len(run) < 24:
                continue
            x = cents[run] - medfilt(cents[run], min(31, (len(run) // 2) * 2 - 1))
            power = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
            freqs = np.fft.rfftfreq(len(x), hop / sr)
            share = power[(freqs >= 3.5) & (freqs <= 8.5)].sum() / (power[freqs > 0.5].sum() + 1e-9)
            if share > 0.5 and 8 < np.sqrt(2 * np.mean(x ** 2)) < 120:
                vibrato += len(run)
    if not total:
        return None, 0.0
    score = round(vibrato / total, 3)
    if score >= VOCAL_SCORE:
        return True, score
    if score <= INSTRUMENTAL_SCORE:
        return False, score
    return None, score


def analyse(path: str | Path, seconds: float = ANALYSIS_SECONDS) -> Analysis:
    """Tempo, key and meter of one song. Raises AudioError (one-line reason) when it cannot be read."""
    y, duration = load_mono(path, seconds)
    bpm, bpm_conf, onset = detect_tempo(y)
    key, key_conf = detect_key(y)
    meter, meter_conf = detect_meter(y, onset, bpm)
    return Analysis(duration=round(duration, 3), bpm=int(round(bpm)) if bpm else None, bpm_confidence=round(bpm_conf, 3),
                    keyscale=key, key_confidence=round(key_conf, 3), timesignature=meter,
                    timesignature_confidence=round(meter_conf, 3))


# -- normalising what tags and users write ------------------------------------------------------

_FLAT_TO_NAME = {"Db": "C#", "D#": "Eb", "Gb": "F#", "G#": "Ab", "A#": "Bb", "Cb": "B", "Fb": "E", "E#": "F",
                 "B#": "C"}
_KEY_TEXT = re.compile(r"^\s*([A-Ga-g])\s*([#b♯♭]?)\s*(m|min|minor|maj|major|M)?\s*$")
# Camelot wheel (DJ software writes "8A"): number -> (minor tonic, major tonic).
_CAMELOT = {1: ("Ab", "B"), 2: ("Eb", "F#"), 3: ("Bb", "C#"), 4: ("F", "Ab"), 5: ("C", "Eb"), 6: ("G", "Bb"),
            7: ("D", "F"), 8: ("A", "C"), 9: ("E", "G"), 10: ("B", "D"), 11: ("F#", "A"), 12: ("C#", "E")}


def normalise_key(text: str | None) -> str | None:
    """"Am", "F#m", "Bbmaj", "a minor", "8A" -> "A minor", "F# minor", "Bb major", "A minor", "A minor";
    None when the text is not a key."""
    if not text:
        return None
    text = str(text).strip()
    camelot = re.fullmatch(r"(\d{1,2})\s*([AaBb])", text)
    if camelot and 1 <= int(camelot.group(1)) <= 12:
        minor, major = _CAMELOT[int(camelot.group(1))]
        return f"{minor} minor" if camelot.group(2).upper() == "A" else f"{major} major"
    match = _KEY_TEXT.match(text.replace("-", " ").replace("  ", " "))
    if not match:
        return None
    note = match.group(1).upper() + match.group(2).replace("♯", "#").replace("♭", "b")
    note = _FLAT_TO_NAME.get(note, note)
    quality = match.group(3) or ""
    mode = "minor" if quality in ("m", "min", "minor") or (quality.lower() == "minor") else "major"
    return f"{note} {mode}"


def parse_bpm(text: object) -> int | None:
    """A tag's tempo ("120", "120.4", "128 BPM") as a whole number in 20..400, else None."""
    match = re.search(r"\d+(?:[.,]\d+)?", str(text or ""))
    if not match:
        return None
    value = float(match.group(0).replace(",", "."))
    return int(round(value)) if 20 <= value <= 400 else None

"""docs/design.md §5.1: decoding, resampling, channels, truncation and every kind of bad file."""

import os

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from sidestep.data.audio import AudioError, load_audio, to_stereo

RATES = (8000, 22050, 44100, 48000, 96000)
FORMATS = {"wav": ("WAV", None), "flac": ("FLAC", None), "ogg": ("OGG", "VORBIS"), "mp3": ("MP3", "MPEG_LAYER_III")}


def tone(rate: int, channels: int, seconds: float = 1.0, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    base = 0.4 * np.sin(2 * np.pi * freq * t)
    return np.stack([base * (1.0 - 0.1 * c) for c in range(channels)], axis=1).astype(np.float32)


def writable(ext: str, rate: int, channels: int) -> bool:
    # MPEG audio holds at most 2 channels at up to 48 kHz; everything else here is writable.
    return not (ext == "mp3" and (channels > 2 or rate > 48000))


CASES = [(ext, rate, ch) for ext in FORMATS for rate in RATES for ch in (1, 2, 6) if writable(ext, rate, ch)]


def dominant_hz(wave: torch.Tensor, rate: int) -> float:
    spectrum = torch.fft.rfft(wave[0].double()).abs()
    return float(spectrum.argmax()) * rate / wave.shape[-1]


@pytest.mark.parametrize("ext,rate,channels", CASES, ids=[f"{e}-{r}-{c}ch" for e, r, c in CASES])
def test_every_format_rate_and_channel_count_decodes(tmp_path, ext, rate, channels):
    path = tmp_path / f"tone.{ext}"
    fmt, subtype = FORMATS[ext]
    sf.write(path, tone(rate, channels), rate, format=fmt, subtype=subtype)
    clip = load_audio(path)
    assert clip.waveform.dtype == torch.float32 and clip.waveform.shape[0] == 2
    assert clip.sample_rate == 48000 and clip.source_rate == rate and clip.source_channels == channels
    # Resampled length is ceil(n * 48000 / rate); lossy codecs may pad a little at the ends.
    assert abs(clip.waveform.shape[-1] - 48000) <= (48000 * 0.08 if ext in ("mp3", "ogg") else 0)
    assert abs(clip.original_duration - 1.0) < (0.08 if ext in ("mp3", "ogg") else 1e-9)
    assert abs(dominant_hz(clip.waveform, 48000) - 440) < 3  # the pitch survives resampling
    if channels == 1:
        assert torch.equal(clip.waveform[0], clip.waveform[1])  # mono duplicated


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 96000])
def test_resampling_is_torchaudio_resample_with_defaults(tmp_path, rate):
    data = tone(rate, 2)
    sf.write(tmp_path / "a.wav", data, rate, subtype="FLOAT")
    expected = torchaudio.transforms.Resample(rate, 48000)(torch.from_numpy(data.T.copy()))
    assert torch.equal(load_audio(tmp_path / "a.wav").waveform, expected)


def test_48k_stereo_is_passed_through_unchanged(tmp_path):
    data = np.random.default_rng(0).uniform(-0.9, 0.9, (4800, 2)).astype(np.float32)
    sf.write(tmp_path / "a.wav", data, 48000, subtype="FLOAT")
    assert torch.equal(load_audio(tmp_path / "a.wav").waveform, torch.from_numpy(data.T.copy()))


def test_no_clamp_and_no_normalisation(tmp_path):
    data = np.full((4800, 2), 0.05, np.float32)
    data[100] = 1.5  # float wav can exceed full scale; docs/design.md §5.1: no clamp
    sf.write(tmp_path / "a.wav", data, 48000, subtype="FLOAT")
    wave = load_audio(tmp_path / "a.wav").waveform
    assert float(wave.max()) == 1.5 and float(wave[0, 0]) == pytest.approx(0.05)


def test_51_is_downmixed_with_itu_coefficients(tmp_path):
    # One distinct constant per channel (L, R, C, LFE, Ls, Rs): the result shows the weights.
    levels = np.array([0.1, 0.2, 0.3, 0.9, 0.05, 0.07], np.float32)
    sf.write(tmp_path / "s.wav", np.tile(levels, (4800, 1)), 48000, subtype="FLOAT")
    wave = load_audio(tmp_path / "s.wav").waveform
    c = 1 / np.sqrt(2)
    left = (0.1 + c * 0.3 + c * 0.05) / (1 + 2 * c)
    right = (0.2 + c * 0.3 + c * 0.07) / (1 + 2 * c)  # the LFE (0.9) is dropped
    assert wave[0, 10].item() == pytest.approx(left, abs=1e-6)
    assert wave[1, 10].item() == pytest.approx(right, abs=1e-6)


def test_other_channel_counts_average_even_and_odd_channels():
    wave = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    assert to_stereo(wave).flatten().tolist() == [2.0, 3.0]


def test_truncation_keeps_original_duration_and_matches_full_resample(tmp_path):
    rate = 44100
    data = np.random.default_rng(1).uniform(-0.5, 0.5, (rate * 3, 2)).astype(np.float32)
    sf.write(tmp_path / "long.wav", data, rate, subtype="FLOAT")
    cut = load_audio(tmp_path / "long.wav", max_duration=1.0)
    full = load_audio(tmp_path / "long.wav")
    assert cut.waveform.shape == (2, 48000) and cut.truncated and not full.truncated
    assert cut.original_duration == pytest.approx(3.0)  # docs/design.md §8 Q16: the file's length, not the cut
    # Only the first ~2 s are decoded, yet the samples equal those of resampling the whole file.
    assert torch.equal(cut.waveform, full.waveform[:, :48000])


def _write_bad(tmp_path, kind: str):
    path = tmp_path / {"corrupt": "c.flac", "empty": "e.wav", "zero-length": "z.wav", "silent": "s.wav",
                       "broken link": "l.wav", "folder": "d.wav", "renamed text": "t.mp3", "random bytes": "r.ogg",
                       "too short": "short.wav"}[kind]
    if kind == "corrupt":  # a real FLAC whose audio frames were overwritten
        sf.write(path, tone(48000, 2), 48000)
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 4:] = np.random.default_rng(0).integers(0, 256, len(raw) - len(raw) // 4, np.uint8).tobytes()
        path.write_bytes(bytes(raw))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "zero-length":
        sf.write(path, np.zeros((0, 2), np.float32), 48000)
    elif kind == "silent":
        sf.write(path, np.zeros((48000, 2), np.float32), 48000)
    elif kind == "broken link":
        os.symlink(tmp_path / "gone.wav", path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "renamed text":
        path.write_text("These are my lyrics, saved with the wrong extension.\n" * 20)
    elif kind == "random bytes":
        path.write_bytes(np.random.default_rng(1).integers(0, 256, 4000, np.uint8).tobytes())
    elif kind == "too short":
        sf.write(path, tone(48000, 2, seconds=0.01), 48000)
    return path


BAD = {"corrupt": "corrupt audio", "empty": "empty file", "zero-length": "zero-length", "silent": "silent",
       "broken link": "broken link", "folder": "folder", "renamed text": "not a readable audio file",
       "random bytes": "not a readable audio file", "too short": "too short"}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_files_raise_audio_error_with_one_line_reason(tmp_path, kind):
    path = _write_bad(tmp_path, kind)
    with pytest.raises(AudioError) as err:
        load_audio(path, min_samples=1920)
    assert BAD[kind] in str(err.value) and "\n" not in str(err.value)


def test_permission_denied_is_reported(tmp_path):
    path = tmp_path / "locked.wav"
    sf.write(path, tone(48000, 2), 48000)
    path.chmod(0)
    if os.geteuid() != 0:
        with pytest.raises(AudioError, match="unreadable: permission denied"):
            load_audio(path)
        return
    # Root reads anything; drop to an unprivileged effective user so the kernel refuses
    # for real (the real uid stays root, so it can be restored).
    os.seteuid(65534)
    try:
        with pytest.raises(AudioError, match="unreadable: permission denied"):
            load_audio(path)
    finally:
        os.seteuid(0)

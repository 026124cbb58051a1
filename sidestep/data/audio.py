"""Audio decoding for preprocessing (docs/design.md §5.1): any file soundfile reads -> stereo float at the VAE rate.

Decoding is libsndfile's (through soundfile: wav, flac, ogg/vorbis/opus, mp3, aiff, ...);
resampling is `torchaudio.transforms.Resample` with its defaults, as upstream (the functional
form builds its kernel in the input dtype and differs in the last bits).
A file that cannot become a training sample raises `AudioError` with a one-line reason, so
the pipeline can skip it and say why.
"""

from __future__ import annotations

import errno
import math
import os
import re
from fractions import Fraction
from functools import lru_cache
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

# Extensions the folder scan treats as songs. Anything else in the folder is reported as
# unsupported rather than silently ignored.
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".wave", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aif", ".aiff")

# Below -100 dBFS nothing audible is left; a file that quiet is digital silence (or dither)
# and would teach the model nothing but a constant latent.
SILENCE_PEAK = 1e-5

# Reading this much past the cut point keeps resampling exact: the sinc filter only looks a
# few input samples ahead (lowpass_filter_width=6), so the first max_duration seconds come
# out identical to resampling the whole file, without decoding a 10-minute song in full.
_RESAMPLE_MARGIN_S = 1.0

# ITU-R BS.775 5.1 -> stereo (channel order L, R, C, LFE, Ls, Rs as in WAV, FLAC and
# libsndfile's other formats); LFE is dropped, as in every standard downmix. Each output's
# weights are normalised to sum to 1 so a full-scale input stays within [-1, 1].
_C = 1 / math.sqrt(2)
_DOWNMIX_51 = torch.tensor([[1.0, 0.0, _C, 0.0, _C, 0.0],
                            [0.0, 1.0, _C, 0.0, 0.0, _C]]) / (1 + 2 * _C)


_REEXPORT = "re-export or re-download the song"


class AudioError(Exception):
    """A file that cannot be used as a training sample; `str()` is the one-line reason."""


@dataclass(frozen=True)
class AudioClip:
    """A decoded song, ready for the VAE."""

    waveform: torch.Tensor  # [2, S] float32 at `sample_rate`, in [-1, 1] as decoded (no clamp)
    sample_rate: int
    original_duration: float  # seconds of the whole file, before --max-duration (docs/design.md §8 Q16)
    source_rate: int
    source_channels: int
    note: str | None = None  # a problem worth telling the user that did not stop the file (truncation)

    @property
    def duration(self) -> float:
        return self.waveform.shape[-1] / self.sample_rate

    @property
    def truncated(self) -> bool:
        return self.duration + 1e-9 < self.original_duration


def check_readable(path: Path) -> None:
    """Turn the ways a path can fail to open into reasons a musician understands."""
    try:
        if path.is_symlink() and not path.exists():
            try:
                os.stat(path)
            except OSError as err:
                if err.errno == errno.ELOOP:
                    raise AudioError("unreadable: link loop (the link leads back to itself); replace it with the "
                                     "song file or delete it") from None
            raise AudioError("unreadable: broken link (the file it points to is gone); point it at the song or "
                             "delete it")
        if path.is_dir():
            raise AudioError("unreadable: this is a folder, not an audio file; rename it")
        with open(path, "rb") as fh:
            head = fh.read(1)
    except PermissionError:
        raise AudioError("unreadable: permission denied; make the file readable (chmod a+r) or copy it "
                         "somewhere you own") from None
    except OSError as err:
        raise AudioError(f"unreadable: {err.strerror or err}; check the drive and copy the file again") from None
    if not head:
        raise AudioError("empty file (0 bytes); copy or export the song again")


# torchaudio's sinc kernel has (target / g) x (source / g) taps (g = their gcd): 147 x 160 for 44.1 -> 48 kHz, but
# 48000 x 44101 (~17 GB) for a 44101 Hz file. Past this many taps the ratio is replaced by the closest fraction
# whose kernel fits (16 MB): relative error at most ~3e-4, i.e. under half a cent of pitch and 0.03 % of tempo,
# far below what anyone hears; the rates in real use (8 to 192 kHz, 44.1 kHz family) keep their exact ratio.
_MAX_KERNEL_TAPS = 4_000_000

# Decoded samples held at once (float32): 2 GiB. 240 s of 8 channels at 192 kHz is 1.4 GiB; a header that
# claims thousands of channels or a GHz rate is refused instead of exhausting the memory.
MAX_DECODED_BYTES = 2 << 30


def resample_ratio(source_rate: int, target_rate: int) -> tuple[int, int]:
    """(source, target) as torchaudio's Resample gets them: the exact ratio while its kernel is small, else the
    nearest fraction whose kernel is (memory bounded for any rate)."""
    g = math.gcd(source_rate, target_rate)
    source, target = source_rate // g, target_rate // g
    if source * target <= _MAX_KERNEL_TAPS:
        return source, target
    exact = Fraction(source_rate, target_rate)
    limit = max(int(math.sqrt(_MAX_KERNEL_TAPS / exact)), 1)  # p * q ~ limit^2 * (p / q) fits
    while limit >= 1:
        ratio = exact.limit_denominator(limit)
        if 0 < ratio.numerator * ratio.denominator <= _MAX_KERNEL_TAPS:
            return ratio.numerator, ratio.denominator
        limit //= 2
    raise AudioError(f"unsupported sample rate: {source_rate} Hz; {_REEXPORT} at 44100 or 48000 Hz")


@lru_cache(maxsize=8)
def _resampler(source_rate: int, target_rate: int) -> torchaudio.transforms.Resample:
    return torchaudio.transforms.Resample(*resample_ratio(source_rate, target_rate))


def sf_path(path: Path) -> str | bytes:
    """The path as libsndfile can open it: bytes on POSIX, so a file name that is not UTF-8 opens too."""
    return str(path) if os.name == "nt" else os.fsencode(path)


def _info(path: Path) -> sf._SoundFileInfo:
    try:
        return sf.info(sf_path(path), verbose=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        # libsndfile's own wording is misleading here (for a damaged mp3 it says the file
        # "does not exist"), so the reason is ours.
        raise AudioError("not a readable audio file: unsupported format, damaged header, or not audio "
                         "at all (wav, flac, mp3 and ogg are read); re-export it as wav or flac") from None


# libsndfile's header log for a WAV whose data chunk is cut short: "data : 192000 (should be 63970)".
_CUT_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be \d+\)", re.MULTILINE)
_BLOCK_ALIGN = re.compile(r"Block Align\s*:\s*(\d+)")


def _promised_frames(info: sf._SoundFileInfo) -> int:
    """Frames the header promises. libsndfile quietly shortens `frames` to the data a cut-off WAV
    really holds; its header log still tells the length the file was meant to have."""
    text = getattr(info, "extra_info", "") or ""
    cut, align = _CUT_DATA.search(text), _BLOCK_ALIGN.search(text)
    if not cut or not align or int(align.group(1)) <= 0:
        return info.frames
    declared = int(cut.group(1))
    if declared in (0, 0xFFFFFFFF, 0xFFFFFFFF - 8):  # placeholders of streaming writers, not a promise
        return info.frames
    return max(info.frames, declared // int(align.group(1)))


def _decode(path: Path, frames: int) -> np.ndarray:
    """[S, C] float32 of the first `frames` frames."""
    try:
        data, _ = sf.read(sf_path(path), frames=frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        detail = str(err).split(":")[-1].strip() or type(err).__name__
        raise AudioError(f"corrupt audio: decoding failed ({detail}); {_REEXPORT}") from None
    if not np.isfinite(data).all():
        raise AudioError(f"corrupt audio: decoded samples are NaN or infinite; {_REEXPORT}")
    return data


def to_stereo(wave: torch.Tensor) -> torch.Tensor:
    """[C, S] -> [2, S]: mono duplicated; 5.1 downmixed per ITU-R BS.775; other counts > 2
    averaged into left (even-numbered channels) and right (odd-numbered channels).

    Upstream keeps the first two channels (docs/design.md §5.1); for a surround file
    that throws away the centre (usually the vocals), so Side-Step downmixes instead.
    """
    channels = wave.shape[0]
    if channels == 1:
        return wave.expand(2, -1).clone()
    if channels == 2:
        return wave
    if channels == 6:
        return _DOWNMIX_51.to(wave.dtype) @ wave
    return torch.stack([wave[0::2].mean(0), wave[1::2].mean(0)])


def load_audio(path: str | Path, target_rate: int = 48_000, max_duration: float = 240.0,
               min_samples: int = 1) -> AudioClip:
    """Decode, resample to `target_rate`, make stereo, cut at `max_duration` seconds (docs/design.md §5.1).

    Raises AudioError for unreadable, empty, zero-length, corrupt, unsupported and silent
    files, and for clips shorter than `min_samples` output samples (the VAE hop: a shorter
    clip has no latent frame at all).
    """
    path = Path(path)
    check_readable(path)
    info = _info(path)
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(f"zero-length audio (the file holds no samples); {_REEXPORT}")
    src_rate, original = int(info.samplerate), info.frames / info.samplerate
    keep_out = int(max_duration * target_rate)
    keep_in = min(info.frames, math.ceil((max_duration + _RESAMPLE_MARGIN_S) * src_rate))
    if src_rate != target_rate:
        resample_ratio(src_rate, target_rate)  # an impossible rate is refused before decoding
    if keep_in * max(int(info.channels), 1) * 4 > MAX_DECODED_BYTES:
        raise AudioError(f"too large to decode: {info.channels} channels at {src_rate} Hz would need "
                         f"{keep_in * info.channels * 4 / 2**30:.1f} GiB; {_REEXPORT} as stereo at 48000 Hz, or "
                         "lower --max-duration")
    data = _decode(path, keep_in)
    if data.shape[0] == 0:
        raise AudioError(f"zero-length audio (nothing could be decoded); {_REEXPORT}")
    got, promised, note = data.shape[0], _promised_frames(info), None
    if (got < keep_in or keep_in == info.frames) and promised - got > max(0.1 * src_rate, 0.02 * promised):
        # The file ends before its header says it does (a cut-off copy or download): use what is there,
        # with its real length in the prompt, and say so.
        original = got / src_rate
        note = (f"truncated file: its header promises {promised / src_rate:.2f} s but only {original:.2f} s "
                f"could be decoded; that part is used ({_REEXPORT} to train on all of it)")
    wave = torch.from_numpy(np.ascontiguousarray(data.T))
    if src_rate != target_rate:
        with torch.no_grad():
            wave = _resampler(src_rate, target_rate)(wave)
    wave = to_stereo(wave)[:, :keep_out].contiguous()
    if wave.shape[-1] < max(min_samples, 1):
        raise AudioError(f"too short: {original:.3f} s; at least {min_samples / target_rate:.2f} s is needed")
    if float(wave.abs().max()) < SILENCE_PEAK:
        raise AudioError("silent: every sample is (near) zero; remove it, or export the track that has the audio")
    return AudioClip(waveform=wave, sample_rate=target_rate, original_duration=original,
                     source_rate=src_rate, source_channels=int(info.channels), note=note)


def is_audio_path(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS

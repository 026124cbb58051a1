"""Lyrics transcription for `train.py dataset --transcribe MODEL` (Whisper-family checkpoints through
transformers). No printing.

The model is given by folder or hub name; with HF_HUB_OFFLINE=1 only local files are used.
Audio is cut into 30 s windows (Whisper's input length); the language is detected once, on the
first window with sound, and every window is transcribed in it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from sidestep.errors import SidestepError

WHISPER_RATE = 16_000
WINDOW_SECONDS = 30.0
MAX_SECONDS = 600.0  # a song longer than ten minutes is transcribed up to there


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def load_whisper(model: str, device: str = "auto"):
    """(processor, model) from a folder or hub name; a one-line SidestepError when it cannot be loaded."""
    from transformers import AutoProcessor, WhisperForConditionalGeneration

    local = Path(model).expanduser()
    source = str(local) if local.exists() else model
    try:
        processor = AutoProcessor.from_pretrained(source, local_files_only=_offline())
        whisper = WhisperForConditionalGeneration.from_pretrained(source, local_files_only=_offline())
    except (OSError, ValueError) as err:
        hint = ("it is not in the local cache and HF_HUB_OFFLINE is set: download it first or give its folder"
                if _offline() else "give a Whisper checkpoint folder or a hub name such as openai/whisper-small")
        detail = str(err).splitlines()[0][:160]
        raise SidestepError(f"--transcribe {model}: cannot load the speech-recognition model ({detail}); "
                            f"{hint}") from None
    return processor, whisper.to(_device(device)).eval()


def _language_code(tokenizer, token_id: int) -> str | None:
    token = tokenizer.convert_ids_to_tokens(int(token_id))
    if isinstance(token, str) and token.startswith("<|") and token.endswith("|>"):
        return token[2:-2]
    return None


def transcribe_waveform(processor, model, audio: np.ndarray) -> tuple[str, str | None]:
    """(text, language code) of mono 16 kHz `audio`."""
    import torch

    window = int(WINDOW_SECONDS * WHISPER_RATE)
    pieces = [audio[i:i + window] for i in range(0, len(audio), window)] or [audio]
    param = next(model.parameters())
    language, texts = None, []
    for piece in pieces:
        if piece.size == 0 or float(np.abs(piece).max()) < 1e-4:
            continue
        features = processor.feature_extractor(piece, sampling_rate=WHISPER_RATE, return_tensors="pt")
        inputs = features.input_features.to(device=param.device, dtype=param.dtype)
        with torch.no_grad():
            if language is None:
                language = _language_code(processor.tokenizer, model.detect_language(inputs)[0])
            ids = model.generate(inputs, language=language, task="transcribe")
        texts.append(processor.batch_decode(ids, skip_special_tokens=True)[0].strip())
    return " ".join(t for t in texts if t).strip(), language


def whisper_transcriber(model: str, device: str = "auto") -> Callable[[Path], tuple[str, str | None]]:
    """A transcriber for dataset_builder.build_dataset: path -> (lyrics, language)."""
    from sidestep.data.audio import load_audio

    processor, whisper = load_whisper(model, device)

    def transcribe(path: Path) -> tuple[str, str | None]:
        clip = load_audio(path, target_rate=WHISPER_RATE, max_duration=MAX_SECONDS)
        return transcribe_waveform(processor, whisper, clip.waveform.mean(0).numpy())

    return transcribe

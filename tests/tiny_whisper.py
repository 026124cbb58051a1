"""A tiny random Whisper built offline (config, byte-level tokenizer, feature extractor, generation config),
for the transcription plumbing of `train.py dataset --transcribe`. Its special tokens (end of text included)
are suppressed in generation, so it always says something: random bytes, up to max_length tokens."""

import json
from pathlib import Path

import torch


def write_tiny_whisper(folder: Path, languages=("en", "de")) -> Path:
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor, WhisperTokenizer)
    folder.mkdir(parents=True, exist_ok=True)
    # byte-level BPE alphabet: printable bytes as themselves, the others shifted above 255
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    byte_chars = [chr(b) if b in printable else chr(next(extra)) for b in range(256)]
    specials = ["<|endoftext|>", "<|startoftranscript|>", *[f"<|{l}|>" for l in languages], "<|translate|>",
                "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
    vocab = {c: i for i, c in enumerate(byte_chars)}
    for s in specials:
        vocab[s] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = WhisperTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), unk_token="<|endoftext|>",
                           bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": specials[1:]})
    fe = WhisperFeatureExtractor(feature_size=80)
    processor = WhisperProcessor(feature_extractor=fe, tokenizer=tok)
    ids = {s: tok.convert_tokens_to_ids(s) for s in specials}
    config = WhisperConfig(vocab_size=len(tok), num_mel_bins=80, d_model=32, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                           max_source_positions=1500, max_target_positions=64,
                           pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"],
                           eos_token_id=ids["<|endoftext|>"], decoder_start_token_id=ids["<|startoftranscript|>"])
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    gen = GenerationConfig(decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids["<|endoftext|>"],
                           pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"], max_length=24,
                           is_multilingual=True, lang_to_id={f"<|{l}|>": ids[f"<|{l}|>"] for l in languages},
                           task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
                           no_timestamps_token_id=ids["<|notimestamps|>"], suppress_tokens=sorted(ids.values()),
                           begin_suppress_tokens=[])
    model.generation_config = gen
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder

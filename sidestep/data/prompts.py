"""The training-side text prompt and lyrics of ACE-Step 1.5 (docs/design.md §5.3). Pure functions.

The template, the metas lines and the caption selection are reproduced character for
character: the condition encoder was trained on exactly these strings.
"""

from __future__ import annotations

import random
from typing import Any

INSTRUCTION = "Fill the audio semantic mask based on the given conditions:"
PROMPT_TEMPLATE = "# Instruction\n{}\n\n# Caption\n{}\n\n# Metas\n{}<|endoftext|>\n"
INSTRUMENTAL_LYRICS = "[Instrumental]"
TAG_POSITIONS = ("prepend", "append", "replace")
# docs/design.md §5.3: the genre subset is drawn by shuffling sample indices after random.seed(42).
GENRE_SUBSET_SEED = 42


def _or_na(value: Any) -> Any:
    """Falsy values (None, 0, "") print as N/A; anything else as stored."""
    return value if value else "N/A"


def metas_string(bpm: Any = None, timesignature: Any = None, keyscale: Any = None, duration: float | None = 0) -> str:
    """The `# Metas` block; `duration` is the original file length, printed as whole seconds
    (docs/design.md §8 Q16)."""
    seconds = int(duration) if duration else 0  # truncation toward zero; never N/A
    return (f"- bpm: {_or_na(bpm)}\n"
            f"- timesignature: {_or_na(timesignature)}\n"
            f"- keyscale: {_or_na(keyscale)}\n"
            f"- duration: {seconds} seconds\n")


def build_prompt(caption: str, metas: str, instruction: str = INSTRUCTION) -> str:
    return PROMPT_TEMPLATE.format(instruction, caption, metas)


def genre_subset(num_samples: int, genre_ratio: float) -> set[int]:
    """Indices of the samples whose caption is their genre: `genre_ratio`% of them (docs/design.md §5.3).

    Identical to upstream's `random.seed(42); random.shuffle(indices)`, but on a private
    `Random` so the global random state is left alone.
    """
    count = int(num_samples * genre_ratio / 100)
    indices = list(range(num_samples))
    random.Random(GENRE_SUBSET_SEED).shuffle(indices)
    return set(indices[:count])


def select_caption(caption: str, genre: str, prompt_override: str | None, in_genre_subset: bool) -> str:
    """Caption or genre, per `prompt_override`, else per genre-subset membership.

    Side-Step variant (docs/design.md §5.3): a genre-subset sample with an empty genre keeps its caption.
    """
    override = (prompt_override or "").strip().lower()
    if override == "genre":
        return genre
    if override == "caption":
        return caption
    if in_genre_subset and genre:
        return genre
    return caption


def apply_custom_tag(text: str, tag: str | None, position: str = "prepend") -> str:
    """`custom_tag` at `tag_position`: prepend "tag, text", append "text, tag", replace "tag"."""
    if not tag:
        return text
    if position not in TAG_POSITIONS:
        raise ValueError(f"tag_position must be one of {', '.join(TAG_POSITIONS)}, got {position!r}")
    if position == "replace" or not text:
        return tag
    return f"{tag}, {text}" if position == "prepend" else f"{text}, {tag}"


def training_lyrics(lyrics: str | None) -> str:
    """Raw lyrics (no language header, docs/design.md §8 Q11); `[Instrumental]` when there are none."""
    return lyrics if lyrics and lyrics.strip() else INSTRUMENTAL_LYRICS


def caption_from_filename(stem: str) -> str:
    """Default caption for audio with no dataset entry: "my_song-final" -> "my song final"."""
    return " ".join(stem.replace("_", " ").replace("-", " ").split())


def sample_prompt(caption: str, genre: str = "", prompt_override: str | None = None, in_genre_subset: bool = False,
                  custom_tag: str | None = None, tag_position: str = "prepend", bpm: Any = None,
                  timesignature: Any = None, keyscale: Any = None, duration: float | None = 0) -> tuple[str, str]:
    """(caption text after selection and tag, full prompt string) for one sample."""
    text = apply_custom_tag(select_caption(caption, genre, prompt_override, in_genre_subset), custom_tag,
                            tag_position)
    return text, build_prompt(text, metas_string(bpm, timesignature, keyscale, duration))


__all__ = [
    "INSTRUCTION", "PROMPT_TEMPLATE", "INSTRUMENTAL_LYRICS", "TAG_POSITIONS", "metas_string", "build_prompt",
    "genre_subset", "select_caption", "apply_custom_tag", "training_lyrics", "caption_from_filename",
    "sample_prompt",
]

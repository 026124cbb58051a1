"""docs/design.md §5.3: the training prompt, metas, caption selection, tags and lyrics, against literal strings."""

import random

import pytest

from sidestep.data.prompts import (apply_custom_tag, build_prompt, caption_from_filename, genre_subset, metas_string,
                                   sample_prompt, select_caption, training_lyrics)

FULL_METAS = "- bpm: 120\n- timesignature: 4\n- keyscale: C major\n- duration: 30 seconds\n"


def test_metas_string_literal():
    assert metas_string(120, "4", "C major", 30.0) == FULL_METAS


@pytest.mark.parametrize("bpm", [None, 0, ""])
def test_falsy_metas_print_na(bpm):
    assert metas_string(bpm, None, "", 12.5) == (
        "- bpm: N/A\n- timesignature: N/A\n- keyscale: N/A\n- duration: 12 seconds\n")


def test_duration_truncates_toward_zero_and_is_never_na():
    # docs/design.md §8 Q16: the original file's length, whole seconds, even past the 240 s cut.
    assert "- duration: 239 seconds\n" in metas_string(duration=239.99)
    assert "- duration: 600 seconds\n" in metas_string(duration=600.4)
    assert "- duration: 0 seconds\n" in metas_string(duration=None)
    assert "- duration: 0 seconds\n" in metas_string(duration=0.7)


def test_bpm_printed_as_stored():
    assert "- bpm: 92.5\n" in metas_string(bpm=92.5, duration=1)
    assert "- bpm: 128\n" in metas_string(bpm="128", duration=1)


def test_prompt_template_literal():
    prompt = build_prompt("upbeat synth pop", FULL_METAS)
    assert prompt == (
        "# Instruction\n"
        "Fill the audio semantic mask based on the given conditions:\n"
        "\n"
        "# Caption\n"
        "upbeat synth pop\n"
        "\n"
        "# Metas\n"
        "- bpm: 120\n"
        "- timesignature: 4\n"
        "- keyscale: C major\n"
        "- duration: 30 seconds\n"
        "<|endoftext|>\n"
    )


def test_sample_prompt_literal_with_tag_and_metas():
    text, prompt = sample_prompt("dreamy ambient", genre="ambient", custom_tag="zx9", tag_position="prepend",
                                 bpm=0, timesignature="3", keyscale="A minor", duration=61.9)
    assert text == "zx9, dreamy ambient"
    assert prompt == ("# Instruction\nFill the audio semantic mask based on the given conditions:\n\n"
                      "# Caption\nzx9, dreamy ambient\n\n"
                      "# Metas\n- bpm: N/A\n- timesignature: 3\n- keyscale: A minor\n- duration: 61 seconds\n"
                      "<|endoftext|>\n")


def _upstream_subset(n: int, ratio: float) -> set[int]:
    """The upstream builder's code, verbatim in spirit: global random after seed(42)."""
    num_genre = int(n * ratio / 100)
    indices = list(range(n))
    random.seed(42)
    random.shuffle(indices)
    return set(indices[:num_genre])


@pytest.mark.parametrize("n,ratio", [(10, 30), (7, 50), (25, 100), (3, 0), (13, 33.3)])
def test_genre_subset_matches_upstream_shuffle(n, ratio):
    state = random.getstate()
    ours = genre_subset(n, ratio)
    assert random.getstate() == state  # the global random state is left alone
    assert ours == _upstream_subset(n, ratio)
    assert len(ours) == int(n * ratio / 100)


def test_genre_subset_literal():
    # random.seed(42); shuffle(range(10)) -> [7, 3, 2, 8, 5, 6, 9, 4, 0, 1]
    assert genre_subset(10, 30) == {7, 3, 2}


@pytest.mark.parametrize("override,subset,expected", [
    ("genre", False, "rock"), ("caption", True, "loud guitars"), ("GENRE", False, "rock"),
    (None, True, "rock"), (None, False, "loud guitars"), ("", True, "rock"), ("other", False, "loud guitars"),
])
def test_select_caption(override, subset, expected):
    assert select_caption("loud guitars", "rock", override, subset) == expected


def test_genre_subset_sample_without_genre_keeps_caption():
    assert select_caption("loud guitars", "", None, True) == "loud guitars"


@pytest.mark.parametrize("position,text,expected", [
    ("prepend", "soft piano", "mytag, soft piano"), ("append", "soft piano", "soft piano, mytag"),
    ("replace", "soft piano", "mytag"), ("prepend", "", "mytag"), ("append", "", "mytag"),
])
def test_custom_tag_positions(position, text, expected):
    assert apply_custom_tag(text, "mytag", position) == expected


def test_no_tag_leaves_text_and_bad_position_is_rejected():
    assert apply_custom_tag("soft piano", "", "prepend") == "soft piano"
    assert apply_custom_tag("soft piano", None, "replace") == "soft piano"
    with pytest.raises(ValueError):
        apply_custom_tag("x", "tag", "middle")


def test_lyrics_default_to_instrumental_marker():
    assert training_lyrics(None) == "[Instrumental]"
    assert training_lyrics("  \n") == "[Instrumental]"
    assert training_lyrics("[Verse]\nla la") == "[Verse]\nla la"  # raw, no language header (docs/design.md §8 Q11)


def test_caption_from_filename():
    assert caption_from_filename("my_song-final__v2") == "my song final v2"
    assert caption_from_filename("Lo-Fi Beat") == "Lo Fi Beat"

from __future__ import annotations

import pytest

from aviator.sim import textgen
from aviator.sim.tokenizer import Tokenizer

tok = Tokenizer()


@pytest.mark.parametrize("count", [1, 2, 7, 16, 100, 600])
def test_answers_have_exactly_count_tokens_and_retokenize_identically(count: int) -> None:
    for n in range(40):
        key = textgen.prompt_key(f"prompt {n}".encode(), seed=0)
        pieces = textgen.generate(key, count)
        assert len(pieces) == count
        assert tok.pieces("".join(pieces)) == pieces


def test_answers_are_deterministic_and_depend_on_prompt_and_seeds() -> None:
    key = textgen.prompt_key(b"hello", seed=0)
    assert textgen.generate(key, 32) == textgen.generate(textgen.prompt_key(b"hello", seed=0), 32)
    others = {
        textgen.prompt_key(b"hellp", seed=0),
        textgen.prompt_key(b"hello", seed=1),
        textgen.prompt_key(b"hello", seed=0, request_seed=7),
    }
    assert key not in others
    assert len(others) == 3
    assert all(textgen.generate(k, 32) != textgen.generate(key, 32) for k in others)


def test_answers_read_like_sentences() -> None:
    text = "".join(textgen.generate(textgen.prompt_key(b"x", seed=0), 200))
    assert text[0].isupper()
    assert not text.startswith(" ")
    assert ". " in text


def test_natural_length_stays_in_bounds_and_varies() -> None:
    lengths = {textgen.natural_length(textgen.prompt_key(bytes([i]), seed=0)) for i in range(256)}
    assert min(lengths) >= textgen.MIN_NATURAL
    assert max(lengths) <= textgen.MAX_NATURAL
    assert len(lengths) > 100

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aviator.sim.tokenizer import Tokenizer, render_chat

tok = Tokenizer()

PROSE = (
    "Kubernetes is turning into the control plane for enterprise AI. The pieces are arriving "
    "upstream one by one, but a platform team still has to stitch them together, and most of "
    "them quietly assume one accelerator vendor. Governance of agents still lives in process "
    "documents instead of in the platform."
)


def test_words_split_into_pieces_of_at_most_six_characters_with_the_space_in_front() -> None:
    assert tok.pieces("Hello, international world!  ") == [
        "Hello",
        ",",
        " intern",
        "ationa",
        "l",
        " world",
        "!",
        "  ",
    ]


def test_special_tokens_are_one_token_even_after_whitespace() -> None:
    assert tok.pieces("a\n<|eot_id|>b") == ["a", "\n", "<|eot_id|>", "b"]
    assert tok.count("<|begin_of_text|>") == 1


def test_english_prose_is_about_four_characters_per_token() -> None:
    ratio = len(PROSE) / tok.count(PROSE)
    assert 3.6 <= ratio <= 4.6, ratio


def test_ids_are_stable_across_processes_and_versions() -> None:
    # A literal, not a second call: ids salted per process (like hash()) would fail here.
    text = "Hello there, international friends"
    assert tok.encode(text) == [29826, 127518, 23150, 120439, 92704, 1534, 30240, 57355]
    assert tok.encode(text) == tok.ids(tok.pieces(text))
    assert tok.encode("Hello where, international friends")[:2] != [29826, 127518]
    assert all(0 <= i < tok.vocab_size for i in tok.encode(PROSE))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_pieces_cover_the_text_and_count_agrees(text: str) -> None:
    pieces = tok.pieces(text)
    assert "".join(pieces) == text
    assert all(pieces)
    assert tok.count(text) == len(pieces) == len(tok.encode(text))
    assert tok.pieces(text) == pieces


def test_chat_template_renders_roles_and_ends_with_the_assistant_header() -> None:
    text = render_chat([("system", "Be brief."), ("user", "Hi")])
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    # BOS, then per message: header (3) + blank line + content + eot, then the assistant header,
    # whose role is two pieces ("assist", "ant"), and the trailing blank line.
    assert tok.count(text) == 1 + (3 + 1 + 3 + 1) + (3 + 1 + 1 + 1) + (1 + 2 + 1) + 1


def test_line_breaks_are_tokens_of_their_own() -> None:
    assert tok.pieces("a\n\nHello  world\n  x") == ["a", "\n\n", "Hello", "  world", "\n", "  x"]
    assert tok.pieces("end. \r\n") == ["end", ".", " \r\n"]

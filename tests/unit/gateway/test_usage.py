"""Reading token usage off answers: whole JSON bodies and server-sent events, chunk by chunk."""

from __future__ import annotations

import itertools

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aviator.gateway import usage
from aviator.gateway.usage import Scanner, Usage

USAGE = {
    "prompt_tokens": 41,
    "completion_tokens": 7,
    "total_tokens": 48,
    "prompt_tokens_details": {"cached_tokens": 32},
}
COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
    "usage": USAGE,
}


def chunk(n: int, *, usage_: object = None, text: str = "tok") -> bytes:
    doc = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": f"{text}{n}"}}],
        "usage": usage_,
    }
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def stream(*, with_usage: bool = True, events: int = 5) -> bytes:
    parts = [chunk(i) for i in range(events)]
    if with_usage:
        final = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": USAGE,
        }
        parts.append(b"data: " + orjson.dumps(final) + b"\n\n")
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


def scan(pieces: list[bytes], *, sse: bool = True) -> Usage | None:
    scanner = Scanner(sse=sse)
    for piece in pieces:
        scanner.feed(piece)
    return scanner.finish()


EXPECTED = Usage(prompt_tokens=41, completion_tokens=7, cached_tokens=32)


# -- whole JSON bodies ------------------------------------------------------------------------


def test_a_json_answer_gives_its_usage() -> None:
    assert usage.from_json(orjson.dumps(COMPLETION)) == EXPECTED


def test_pretty_printed_json_is_read_too() -> None:
    body = orjson.dumps(COMPLETION, option=orjson.OPT_INDENT_2)
    assert usage.from_json(body) == EXPECTED


def test_cached_tokens_are_none_when_the_engine_does_not_report_them() -> None:
    plain = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert usage.from_json(orjson.dumps({**COMPLETION, "usage": plain})) == Usage(5, 2, None)
    nulled = {**plain, "prompt_tokens_details": None}
    assert usage.from_json(orjson.dumps({**COMPLETION, "usage": nulled})) == Usage(5, 2, None)


def test_an_embeddings_answer_has_no_completion_tokens() -> None:
    body = orjson.dumps(
        {"object": "list", "data": [], "usage": {"prompt_tokens": 9, "total_tokens": 9}}
    )
    assert usage.from_json(body) == Usage(9, 0, None)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json at all",
        orjson.dumps({k: v for k, v in COMPLETION.items() if k != "usage"}),
        orjson.dumps({**COMPLETION, "usage": None}),
        orjson.dumps({**COMPLETION, "usage": {"prompt_tokens": "many"}}),
        orjson.dumps({**COMPLETION, "usage": {"prompt_tokens": -1, "completion_tokens": 1}}),
        orjson.dumps({**COMPLETION, "usage": {"prompt_tokens": True, "completion_tokens": 1}}),
        b'{"usage": {"prompt_tokens": 3, "completion_tokens": ',  # cut off
        b'{"usage": {"prompt_tokens": 3,, }}',  # malformed
    ],
)
def test_no_or_malformed_usage_gives_none(body: bytes) -> None:
    assert usage.from_json(body) is None


def test_usage_quoted_in_generated_text_is_not_mistaken_for_the_key() -> None:
    said = '{"usage": {"prompt_tokens": 999, "completion_tokens": 999}}'
    doc = {**COMPLETION, "choices": [{"message": {"content": said}}]}
    doc.pop("usage")
    assert usage.from_json(orjson.dumps(doc)) is None
    assert usage.from_json(orjson.dumps({**doc, "usage": USAGE})) == EXPECTED


def test_braces_inside_strings_of_the_usage_object_do_not_cut_it_short() -> None:
    odd = {"prompt_tokens": 3, "completion_tokens": 1, "note": "a}b{c}d}"}
    assert usage.from_json(orjson.dumps({"usage": odd, "after": {"x": 1}})) == Usage(3, 1)


def test_the_compact_shape_and_its_neighbours_give_what_the_general_search_gives() -> None:
    # ``from_json`` reads a compact ``"usage":{...}`` without nested objects in fewer steps; every
    # variation must still come out as the general search (``_decode_at`` per key) says.
    def general(body: bytes) -> Usage | None:
        end = len(body)
        while (at := body.rfind(b'"usage"', 0, end)) >= 0:
            if (found := usage._decode_at(body, at)) is not None:
                return found
            end = at
        return None

    plain = b'"usage":{"prompt_tokens":3,"completion_tokens":8}'
    bodies = [
        b"{" + plain + b"}",
        b'{"a":1,' + plain + b',"b":{"c":2}}',
        b'{"usage":{"prompt_tokens":1,"completion_tokens":1},"x":{"usage":{"n":1}}}',  # not one
        b'{"usage":{"prompt_tokens":1,"completion_tokens":1},"x":{"usage":{"n":"}"}}}',
        b'{"usage":{"prompt_tokens":2,"completion_tokens":2},"x":"\\"usage":{}"}',
        b'{"usage":{"prompt_tokens":5,"completion_tokens":1,"d":{"cached_tokens":4}}}',
        b'{"usage":{"prompt_tokens":5,"completion_tokens":1,"n":"{"}}',
        b'{"usage":{"prompt_tokens":5,"completion_tokens":1,"n":"}{"}}',
        b'{"usage":{"prompt_tokens":6,"completion_tokens":1}',  # the closing brace only
        b'{"usage":{"prompt_tokens":6,',
        b'"usage":{"prompt_tokens":7,"completion_tokens":0}',  # the key at the very start
        b'x"usage":{"prompt_tokens":7,"completion_tokens":0}',
        b'\\"usage":{"prompt_tokens":7,"completion_tokens":0}',
    ]
    for body in bodies:
        assert usage.from_json(body) == general(body), body
    assert usage.from_json(bodies[2]) == Usage(1, 1, None)  # the last key held no usage


def test_cached_tokens_never_exceed_the_prompt() -> None:
    odd = {
        "prompt_tokens": 4,
        "completion_tokens": 1,
        "prompt_tokens_details": {"cached_tokens": 9},
    }
    assert usage.from_json(orjson.dumps({"usage": odd})) == Usage(4, 1, 4)


# -- server-sent events ---------------------------------------------------------------------------


def test_a_stream_with_include_usage_gives_the_final_usage() -> None:
    assert scan([stream()]) == EXPECTED


def test_a_stream_without_usage_gives_none() -> None:
    assert scan([stream(with_usage=False)]) is None


def test_null_usage_in_every_chunk_is_skipped() -> None:
    scanner = Scanner(sse=True)
    scanner.feed(chunk(0))
    assert scanner.usage is None
    assert scanner.finish() is None


def test_continuous_usage_keeps_the_latest() -> None:
    first = {"prompt_tokens": 41, "completion_tokens": 1}
    last = {"prompt_tokens": 41, "completion_tokens": 2}
    assert scan([chunk(0, usage_=first) + chunk(1, usage_=last)]) == Usage(41, 2, None)


def test_a_usage_event_split_across_reads_is_found() -> None:
    data = stream()
    at = data.index(b'"usage":{')
    for cut in (at - 3, at + 1, at + 5, at + 20, len(data) - 12):
        assert scan([data[:cut], data[cut:]]) == EXPECTED, cut


def test_every_way_of_splitting_a_stream_in_three_gives_the_same_usage() -> None:
    data = stream(events=1)
    for i in range(1, len(data), 7):
        for j in range(i, len(data), 11):
            assert scan([data[:i], data[i:j], data[j:]]) == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=4000), max_size=12))
def test_any_chunking_gives_the_same_usage(cuts: list[int]) -> None:
    data = stream()
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    pieces = [data[a:b] for a, b in itertools.pairwise(points)]
    assert scan(pieces) == EXPECTED


def test_crlf_line_ends_and_no_final_newline_work() -> None:
    final = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}'
    assert scan([chunk(0).replace(b"\n", b"\r\n"), final]) == Usage(3, 4, None)


def test_usage_outside_a_data_line_is_ignored() -> None:
    comment = b': {"usage":{"prompt_tokens":3,"completion_tokens":4}}\n\n'
    assert scan([comment]) is None


def test_a_malformed_usage_event_is_skipped() -> None:
    broken = b'data: {"usage":{"prompt_tokens":3,,}}\n\n'
    assert scan([broken]) is None
    assert scan([broken + stream()]) == EXPECTED


def test_an_overlong_line_is_skipped_without_being_kept() -> None:
    scanner = Scanner(sse=True)
    scanner.feed(b'data: {"x":"')
    for _ in range(10):
        scanner.feed(b"y" * (usage.LINE_MAX_BYTES // 4))
    assert len(scanner._pending) <= usage.LINE_MAX_BYTES
    scanner.feed(b'"}\n\n' + stream())
    assert scanner.finish() == EXPECTED


# -- chunked JSON bodies ----------------------------------------------------------------------


def test_a_chunked_json_body_keeps_only_its_tail() -> None:
    big = {**COMPLETION, "choices": [{"message": {"content": "z" * 200_000}}]}
    body = orjson.dumps(big)
    scanner = Scanner(sse=False)
    for i in range(0, len(body), 4096):
        scanner.feed(body[i : i + 4096])
        assert len(scanner._pending) <= usage.TAIL_BYTES
    assert scanner.finish() == EXPECTED


def test_scanners_follow_the_content_type() -> None:
    sse = usage.scanner_for("text/event-stream; charset=utf-8")
    json_ = usage.scanner_for("application/json")
    assert sse is not None and sse._sse
    assert json_ is not None and not json_._sse
    assert usage.scanner_for("text/plain") is None
    assert usage.scanner_for("") is None

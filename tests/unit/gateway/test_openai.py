from __future__ import annotations

import orjson
import pytest

from aviator.gateway import openai


def test_a_json_object_with_a_model_is_routable() -> None:
    route = openai.parse_request(b'{"model": "m", "stream": true}', operation="chat")
    assert route.model == "m"
    assert route.operation == "chat"
    assert route.body["stream"] is True


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"", None),
        (b"[1, 2]", None),
        (b'"m"', None),
        (b"{}", "model"),
        (b'{"model": ""}', "model"),
        (b'{"model": 7}', "model"),
    ],
)
def test_bad_bodies_are_400_in_openai_shape(body: bytes, param: str | None) -> None:
    with pytest.raises(openai.OpenAIError) as info:
        openai.parse_request(body, operation="chat")
    err = info.value
    assert err.status == 400
    doc = orjson.loads(err.body())
    assert set(doc["error"]) == {"message", "type", "param", "code"}
    assert doc["error"]["type"] == "invalid_request_error"
    assert doc["error"]["param"] == param


def test_echoed_client_input_is_capped() -> None:
    err = openai.model_not_found("x" * 10_000)
    assert err.code == "model_not_found"
    assert len(err.message) < 400


def test_model_list_has_openai_shape() -> None:
    doc = orjson.loads(openai.model_list(["a", "b"]))
    assert doc["object"] == "list"
    assert [m["id"] for m in doc["data"]] == ["a", "b"]
    assert all(m["object"] == "model" for m in doc["data"])

"""The OpenAI wire format: request validation, response and SSE chunk shapes, error bodies.

Pure functions over decoded JSON; no I/O. Validation raises ``aviator.api.errors`` exceptions whose
first cause names the offending parameter (``param``) and, when OpenAI has one, its ``code`` in the
cause's ``reason``; ``error_body`` turns any ``ApiError`` into OpenAI's
``{"error": {"message", "type", "param", "code"}}``.

Accepted and honoured: ``model``, ``messages`` / ``prompt``, ``max_tokens``,
``max_completion_tokens`` (chat; wins over ``max_tokens`` like vLLM), ``stream``,
``stream_options.include_usage``, ``ignore_eos`` (vLLM extension: always produce ``max_tokens``),
``seed`` (mixed into the text seed). Type-checked and otherwise ignored: ``temperature``,
``top_p``, ``stop``, ``user``, ``n`` (only 1). Unknown fields are ignored, as vLLM does.

A validated request carries its prompt's token ids (for the prefix cache); ``usage`` carries
``prompt_tokens_details.cached_tokens`` the way vLLM reports prefix-cache hits.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import orjson

from aviator.api.errors import ApiError, BadRequest, FieldError, NotFound
from aviator.sim import engine
from aviator.sim.tokenizer import Tokenizer, render_chat

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "ChunkWriter",
    "CompletionRequest",
    "Usage",
    "error_body",
    "parse_chat",
    "parse_completion",
    "response_body",
]

DEFAULT_MAX_TOKENS = 16
"""Completion length when the request names none (the OpenAI completions default)."""

Kind = Literal["chat", "completion"]
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_MAX_ID = 2**31


def _bad(param: str, message: str, code: str | None = None) -> BadRequest:
    reason = code if code is not None else "FieldValueInvalid"
    return BadRequest(message, causes=(FieldError(field=param, message=message, reason=reason),))


@dataclass(frozen=True, slots=True)
class Usage:
    """The ``usage`` object. ``prompt_tokens_details`` is ``{"cached_tokens": N}`` when N prompt
    tokens came from the prefix cache and null otherwise, as vLLM reports it with
    ``--enable-prompt-tokens-details`` (calibration.md §5)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": (
                {"cached_tokens": self.cached_tokens} if self.cached_tokens else None
            ),
        }


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """What the engine needs to know about a validated chat or completions request."""

    kind: Kind
    model: str
    prompt_tokens: int
    prompt_token_ids: list[int]
    """The prompt's token ids (``Tokenizer`` ids of the rendered prompt, or the ids sent): what
    the prefix cache hashes."""
    prompt_bytes: bytes
    """The rendered prompt (or packed token ids): the seed of the generated answer."""
    max_tokens: int
    stream: bool
    include_usage: bool
    ignore_eos: bool
    seed: int | None


class _Common(NamedTuple):
    model: str
    stream: bool
    include_usage: bool
    ignore_eos: bool
    seed: int | None


def _common(body: Any, *, served_model: str) -> _Common:
    """Check the fields chat and completions share."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model = body.get("model")
    if model is None:
        raise _bad("model", "you must provide a model parameter", "missing_required_parameter")
    if not isinstance(model, str):
        raise _bad("model", "model must be a string")
    if model != served_model:
        raise _not_found(model)
    _optional(body, "stream", bool)
    _optional(body, "ignore_eos", bool)
    _optional(body, "user", str)
    seed = _optional(body, "seed", int)
    if seed is not None and not -(2**63) <= seed < 2**64:
        raise _bad("seed", "seed must fit in 64 bits")
    for name, low, high in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
        value = _optional(body, name, float)
        if value is not None and not low <= value <= high:
            raise _bad(name, f"{name} must be between {low} and {high}")
    n = _optional(body, "n", int)
    if n is not None and n != 1:
        raise _bad("n", "the simulator only supports n=1")
    stop = body.get("stop")
    if (
        stop is not None
        and not isinstance(stop, str)
        and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise _bad("stop", "stop must be a string or a list of strings")
    stream = bool(body.get("stream"))
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise _bad("stream_options", "stream_options is only allowed when stream is true")
        if not isinstance(options, dict):
            raise _bad("stream_options", "stream_options must be an object")
        include_usage = _optional(options, "include_usage", bool, "stream_options.") is True
    return _Common(
        model=model,
        stream=stream,
        include_usage=include_usage,
        ignore_eos=body.get("ignore_eos") is True,
        seed=seed,
    )


def _optional(body: dict[str, Any], name: str, kind: type, prefix: str = "") -> Any:
    value = body.get(name)
    if value is None:
        return None
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        expected = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
        raise _bad(prefix + name, f"{prefix}{name} must be {expected.get(kind, kind.__name__)}")
    return value


def _max_tokens(body: dict[str, Any], *, names: tuple[str, ...]) -> int:
    for name in names:
        value = _optional(body, name, int)
        if value is not None:
            if value < 1:
                raise _bad(name, f"{name} must be at least 1, got {value}")
            return int(value)
    return DEFAULT_MAX_TOKENS


def _check_length(prompt_tokens: int, max_tokens: int, *, max_model_len: int, param: str) -> None:
    if prompt_tokens + max_tokens > max_model_len:
        raise _bad(
            param,
            f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {param}, "
            f"{max_tokens} in the completion). Please reduce the length of the {param} or "
            "completion.",
            "context_length_exceeded",
        )


def _not_found(model: str) -> ApiError:
    return NotFound(
        f"The model `{model}` does not exist.",
        causes=(FieldError(field="model", message="unknown model", reason="model_not_found"),),
    )


def _message_text(message: Any, index: int) -> tuple[str, str]:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _bad(where, f"{where} must be an object")
    role = message.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        raise _bad(f"{where}.role", f"{where}.role must be one of {', '.join(sorted(_ROLES))}")
    content = message.get("content")
    if isinstance(content, str):
        return role, content
    if content is None:
        if role in ("assistant", "tool", "function"):
            return role, ""
        raise _bad(f"{where}.content", f"{where}.content is required for role {role!r}")
    if isinstance(content, list):
        texts: list[str] = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise _bad(
                    f"{where}.content[{j}]",
                    f"{where}.content[{j}] must be a text part; the simulator has no other modality",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise _bad(f"{where}.content[{j}].text", "a text part needs a string `text`")
            texts.append(text)
        return role, "\n".join(texts)
    raise _bad(f"{where}.content", f"{where}.content must be a string or a list of parts")


def parse_chat(
    body: Any, *, served_model: str, max_model_len: int, tokenizer: Tokenizer
) -> CompletionRequest:
    """Validate a ``/v1/chat/completions`` body."""
    common = _common(body, served_model=served_model)
    messages = body.get("messages")
    if messages is None:
        raise _bad("messages", "you must provide messages", "missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "messages must be a non-empty array")
    prompt = render_chat(_message_text(m, i) for i, m in enumerate(messages))
    ids = tokenizer.encode(prompt)
    max_tokens = _max_tokens(body, names=("max_completion_tokens", "max_tokens"))
    _check_length(len(ids), max_tokens, max_model_len=max_model_len, param="messages")
    return CompletionRequest(
        kind="chat",
        model=common.model,
        prompt_tokens=len(ids),
        prompt_token_ids=ids,
        prompt_bytes=prompt.encode(),
        max_tokens=max_tokens,
        stream=common.stream,
        include_usage=common.include_usage,
        ignore_eos=common.ignore_eos,
        seed=common.seed,
    )


def _prompt(prompt: Any, tokenizer: Tokenizer) -> tuple[list[int], bytes]:
    """(token ids, seed bytes) of a completions ``prompt``: text or token ids, one of them."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        text = "<|begin_of_text|>" + prompt
        return tokenizer.encode(text), text.encode()
    if isinstance(prompt, list) and prompt:
        if all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < _MAX_ID for t in prompt):
            return list(prompt), array("q", prompt).tobytes()
        if all(isinstance(p, str | list) for p in prompt):
            raise _bad("prompt", "the simulator serves one prompt per request (no batches)")
    raise _bad("prompt", "prompt must be a string, a list of token ids, or a list of one of those")


def parse_completion(
    body: Any, *, served_model: str, max_model_len: int, tokenizer: Tokenizer
) -> CompletionRequest:
    """Validate a ``/v1/completions`` body."""
    common = _common(body, served_model=served_model)
    if "prompt" not in body or body["prompt"] is None:
        raise _bad("prompt", "you must provide a prompt", "missing_required_parameter")
    ids, prompt_bytes = _prompt(body["prompt"], tokenizer)
    max_tokens = _max_tokens(body, names=("max_tokens",))
    _check_length(len(ids), max_tokens, max_model_len=max_model_len, param="prompt")
    return CompletionRequest(
        kind="completion",
        model=common.model,
        prompt_tokens=len(ids),
        prompt_token_ids=ids,
        prompt_bytes=prompt_bytes,
        max_tokens=max_tokens,
        stream=common.stream,
        include_usage=common.include_usage,
        ignore_eos=common.ignore_eos,
        seed=common.seed,
    )


def response_body(
    req: CompletionRequest,
    *,
    response_id: str,
    created: int,
    text: str,
    finish_reason: str,
    usage: Usage,
) -> dict[str, Any]:
    """The non-streaming ``chat.completion`` / ``text_completion`` object."""
    choice: dict[str, Any]
    if req.kind == "chat":
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        obj = "text_completion"
    return {
        "id": response_id,
        "object": obj,
        "created": created,
        "model": req.model,
        "choices": [choice],
        "usage": usage.to_json(),
    }


class ChunkWriter:
    """Serialises the SSE events of one streamed response.

    Token chunks are the hot path (one per output token), so they are spliced from pre-rendered
    bytes around the JSON-encoded piece instead of building a dict each time.
    """

    __slots__ = ("_head", "_kind", "_prefix", "_suffix", "_usage_null")

    def __init__(self, req: CompletionRequest, *, response_id: str, created: int) -> None:
        self._kind = req.kind
        self._usage_null = req.include_usage
        self._head: dict[str, Any] = {
            "id": response_id,
            "object": "chat.completion.chunk" if req.kind == "chat" else "text_completion",
            "created": created,
            "model": req.model,
        }
        token = self._chunk_dict(None, "\x00")
        prefix, suffix = orjson.dumps(token).rsplit(b'"\\u0000"', 1)
        self._prefix = b"data: " + prefix
        self._suffix = suffix + b"\n\n"

    def _chunk_dict(self, finish_reason: str | None, content: str | None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0}
        if self._kind == "chat":
            choice["delta"] = {} if content is None else {"content": content}
        else:
            choice["text"] = "" if content is None else content
        choice["logprobs"] = None
        choice["finish_reason"] = finish_reason
        chunk = {**self._head, "choices": [choice]}
        if self._usage_null:
            chunk["usage"] = None
        return chunk

    @staticmethod
    def _event(obj: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    def role(self) -> bytes:
        """The first chat chunk: the assistant role with empty content (empty for completions)."""
        if self._kind != "chat":
            return b""
        chunk = self._chunk_dict(None, "")
        chunk["choices"][0]["delta"] = {"role": "assistant", "content": ""}
        return self._event(chunk)

    def tokens(self, pieces: list[str]) -> bytes:
        """One event per piece."""
        prefix, suffix = self._prefix, self._suffix
        return b"".join([prefix + orjson.dumps(piece) + suffix for piece in pieces])

    def finish(self, finish_reason: str) -> bytes:
        return self._event(self._chunk_dict(finish_reason, None))

    def usage(self, usage: Usage) -> bytes:
        return self._event({**self._head, "choices": [], "usage": usage.to_json()})

    @staticmethod
    def done() -> bytes:
        return b"data: [DONE]\n\n"


def error_body(exc: ApiError) -> dict[str, Any]:
    """OpenAI's error object for ``exc``."""
    cause = exc.causes[0] if exc.causes else None
    code: str | None = None
    if cause is not None and cause.reason != "FieldValueInvalid":
        code = cause.reason
    elif isinstance(exc, engine.QueueFull):
        code = "queue_full"
    elif exc.code == 413:
        code = "request_too_large"
    return {
        "error": {
            "message": exc.message,
            "type": "invalid_request_error" if exc.code < 500 else "server_error",
            "param": cause.field if cause is not None else None,
            "code": code,
        }
    }

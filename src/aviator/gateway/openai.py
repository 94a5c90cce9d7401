"""The OpenAI API surface: request parsing and response bodies. Pure (bytes in, bytes out).

Error bodies follow OpenAI's shape so existing clients surface them properly::

    {"error": {"message": "...", "type": "invalid_request_error", "param": null, "code": "..."}}
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from aviator.api.errors import AviatorError
from aviator.gateway.picking import RouteRequest

__all__ = [
    "OPERATIONS",
    "OpenAIError",
    "bad_json",
    "method_not_allowed",
    "model_list",
    "model_not_found",
    "no_ready_replica",
    "parse_request",
    "too_large",
    "unauthorized",
    "unknown_url",
    "upstream_error",
]

OPERATIONS: dict[str, str] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "text_completion",
    "/v1/embeddings": "embeddings",
}
"""Proxied paths and their OTel GenAI operation names (``gen_ai.operation.name``)."""

_QUOTE_MAX = 256
"""Longest piece of client input echoed back in an error message."""


class OpenAIError(AviatorError):
    """A refusal the gateway answers itself, in OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "param": self.param,
                    "code": self.code,
                }
            }
        )


def _quote(text: str) -> str:
    return text if len(text) <= _QUOTE_MAX else text[:_QUOTE_MAX] + "…"


def bad_json(reason: str) -> OpenAIError:
    return OpenAIError(
        400,
        f"We could not parse the JSON body of your request ({reason}). The request body must be "
        "a JSON object.",
    )


def unauthorized() -> OpenAIError:
    return OpenAIError(
        401,
        "Missing or invalid API key: send 'Authorization: Bearer <key>'.",
        code="invalid_api_key",
    )


def too_large(limit: int) -> OpenAIError:
    return OpenAIError(
        413,
        f"The request body is larger than the gateway accepts ({limit} bytes).",
        code="request_too_large",
    )


def model_not_found(model: str) -> OpenAIError:
    return OpenAIError(
        404,
        f"The model `{_quote(model)}` does not exist.",
        param="model",
        code="model_not_found",
    )


def no_ready_replica(model: str, *, retry_after_s: int = 1) -> OpenAIError:
    return OpenAIError(
        503,
        f"The model `{_quote(model)}` has no ready replica right now; retry shortly.",
        type="server_error",
        code="model_not_ready",
        retry_after_s=retry_after_s,
    )


def upstream_error(model: str, detail: str) -> OpenAIError:
    return OpenAIError(
        502,
        f"No replica of `{_quote(model)}` could answer ({detail}).",
        type="server_error",
        code="upstream_error",
    )


def unknown_url(method: str, path: str) -> OpenAIError:
    return OpenAIError(404, f"Unknown request URL: {method} {_quote(path)}.", code="unknown_url")


def method_not_allowed(method: str, path: str, *, allowed: str) -> OpenAIError:
    return OpenAIError(405, f"Method {method} is not allowed on {path}; use {allowed}.")


def parse_request(body: bytes, *, operation: str, session: str | None = None) -> RouteRequest:
    """Parse the body once; raise ``OpenAIError`` (400) unless it is an object with a model."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_json(_quote(str(exc))) from None
    if not isinstance(doc, dict):
        raise bad_json(f"got a JSON {type(doc).__name__}, not an object")
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise OpenAIError(
            400, "You must provide a model parameter (a non-empty string).", param="model"
        )
    return RouteRequest(model=model, operation=operation, body=doc, session=session or None)


def model_list(models: Iterable[str]) -> bytes:
    """``GET /v1/models`` in OpenAI's list shape."""
    return orjson.dumps(
        {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": "aviator"}
                for name in models
            ],
        }
    )

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
    "audit_unavailable",
    "bad_json",
    "budget_exceeded",
    "grant_ended",
    "method_not_allowed",
    "model_list",
    "model_not_found",
    "no_ready_replica",
    "parse_request",
    "policy_denied",
    "protocol_error",
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
        challenge: str | None = None,
    ) -> None:
        """``challenge``: the ``WWW-Authenticate`` value of a 401."""
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s
        self.challenge = challenge

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


_UNAUTHORIZED: dict[str, str] = {
    "missing": "No credentials: send 'Authorization: Bearer <agent token or API key>'.",
    "expired": "The token has expired: get a fresh one (aviator token issue agent/NAME).",
    "not_yet_valid": "The token is not valid yet (check the clocks).",
    "wrong_audience": "The token is not meant for the gateway (its audience must be 'gateway').",
    "bad_algorithm": "The token is signed with an algorithm the gateway does not accept.",
    "unknown_key": "The token is signed with a key the gateway does not know.",
    "bad_signature": "The token's signature does not verify.",
    "unknown_issuer": "The token comes from an issuer the gateway does not trust.",
    "unknown_agent": "The token's agent does not exist.",
}


def unauthorized(reason: str, challenge: str) -> OpenAIError:
    """A 401 saying which check failed (``reason``), never echoing the credential."""
    return OpenAIError(
        401,
        _UNAUTHORIZED.get(reason, "Invalid credentials: not a known API key or a valid token."),
        type="authentication_error",
        code="invalid_api_key",
        challenge=challenge,
    )


def policy_denied(reason: str) -> OpenAIError:
    """A 403: ``reason`` is the policy decision's, which names policies and entities only."""
    return OpenAIError(
        403, f"Denied by policy: {reason}.", type="permission_error", code="policy_denied"
    )


def grant_ended(reason: str) -> OpenAIError:
    return OpenAIError(403, reason, type="permission_error", code="grant_ended")


def budget_exceeded(budget: str, message: str, *, retry_after_s: int) -> OpenAIError:
    return OpenAIError(
        429,
        f"Budget {budget} exceeded: {message}; retry in {retry_after_s}s.",
        type="rate_limit_error",
        param=budget,
        code="budget_exceeded",
        retry_after_s=retry_after_s,
    )


def audit_unavailable() -> OpenAIError:
    """A 503: the decision could not be recorded, so the request is not served (fail closed)."""
    return OpenAIError(
        503,
        "The audit log cannot take the record of this request right now; retry shortly.",
        type="server_error",
        code="audit_unavailable",
        retry_after_s=1,
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


def protocol_error(status: int, message: str) -> OpenAIError:
    """The HTTP server's own refusals (malformed request, limits) and unhandled failures."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return OpenAIError(status, message, type=kind)


def parse_request(body: bytes, *, operation: str, session: str | None = None) -> RouteRequest:
    """Parse the body once; raise ``OpenAIError`` (400) unless it is an object with a model."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_json(_quote(str(exc))) from None
    if type(doc) is not dict:  # (orjson makes plain dicts)
        raise bad_json(f"got a JSON {type(doc).__name__}, not an object")
    model = doc.get("model")
    if type(model) is not str or not model:
        raise OpenAIError(
            400, "You must provide a model parameter (a non-empty string).", param="model"
        )
    return RouteRequest(model, operation, doc, session or None)  # (positional: per request)


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

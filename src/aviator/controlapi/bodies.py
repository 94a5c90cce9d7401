"""The small, optional JSON bodies of the Control API's action endpoints (a token request, a grant
decision): read, parse and validate into a pydantic model, with the API's errors.

An empty body means every field's default. Reading is bounded by the application's
``client_max_size``; this module holds no state.
"""

from __future__ import annotations

from typing import TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from aviator.api import errors
from aviator.api.admission import errors_from_pydantic

__all__ = ["read_options"]

M = TypeVar("M", bound=BaseModel)


async def read_options(request: web.Request, model: type[M], *, kind: str, example: str) -> M:
    """The request's JSON object as ``model`` (its defaults when the body is empty).

    ``kind`` names the body in an ``Invalid`` error; ``example`` shows its shape when the body is
    JSON but not an object."""
    raw = await request.read()
    if not raw.strip():
        return model()
    if request.content_type not in ("application/json", "application/octet-stream", ""):
        raise errors.UnsupportedMediaType(
            f"unsupported Content-Type {request.content_type!r}: use application/json"
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.BadRequest(f"malformed JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise errors.BadRequest(f"the body must be a JSON object like {example}")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise errors.Invalid(
            f"the {kind} is invalid", kind=kind, causes=errors_from_pydantic(exc)
        ) from None

"""aviator's error hierarchy, shaped like Kubernetes ``Status`` failures.

::

    AviatorError
     └── ApiError (carries an HTTP status code and a Kubernetes-style reason)
          ├── BadRequest            400  malformed body, bad query
          ├── Unauthorized          401  missing or wrong token
          ├── Forbidden             403
          ├── NotFound              404
          ├── MethodNotAllowed      405
          ├── AlreadyExists         409  create of an existing name
          ├── Conflict              409  stale resourceVersion
          ├── Gone                  410  watch resourceVersion too old: relist
          ├── RequestEntityTooLarge 413
          ├── UnsupportedMediaType  415
          ├── Invalid               422  field-level validation errors (``causes``)
          ├── TooManyRequests       429
          ├── InternalError         500
          └── ServiceUnavailable    503  cannot serve now (e.g. the audit log is full): retry

Every layer raises these; the HTTP boundary turns them into ``Status`` bodies and the client turns
``Status`` bodies back into them, so a CLI caller sees the same exception a store caller would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class FieldError:
    """One field-level problem: where (``spec.replicas.min``) and what was expected."""

    field: str
    message: str
    reason: str = "FieldValueInvalid"

    def to_cause(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message, "reason": self.reason}


class AviatorError(Exception):
    """Root of everything aviator raises on purpose."""


class ApiError(AviatorError):
    code: ClassVar[int] = 500
    reason: ClassVar[str] = "InternalError"

    def __init__(
        self,
        message: str,
        *,
        kind: str | None = None,
        name: str | None = None,
        causes: tuple[FieldError, ...] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.name = name
        self.causes = causes
        self.retry_after = retry_after

    def to_status(self) -> dict[str, Any]:
        """The Kubernetes ``Status`` body for this error."""
        details: dict[str, Any] = {}
        if self.name is not None:
            details["name"] = self.name
        if self.kind is not None:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = [c.to_cause() for c in self.causes]
        if self.retry_after is not None:
            details["retryAfterSeconds"] = max(1, round(self.retry_after))
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if details:
            body["details"] = details
        return body

    def __str__(self) -> str:
        if not self.causes:
            return self.message
        lines = [self.message] + [f"  {c.field}: {c.message}" for c in self.causes]
        return "\n".join(lines)


class BadRequest(ApiError):
    code, reason = 400, "BadRequest"


class Unauthorized(ApiError):
    code, reason = 401, "Unauthorized"


class Forbidden(ApiError):
    code, reason = 403, "Forbidden"


class NotFound(ApiError):
    code, reason = 404, "NotFound"


class MethodNotAllowed(ApiError):
    code, reason = 405, "MethodNotAllowed"


class AlreadyExists(ApiError):
    code, reason = 409, "AlreadyExists"


class Conflict(ApiError):
    code, reason = 409, "Conflict"


class Gone(ApiError):
    code, reason = 410, "Expired"


class RequestEntityTooLarge(ApiError):
    code, reason = 413, "RequestEntityTooLarge"


class UnsupportedMediaType(ApiError):
    code, reason = 415, "UnsupportedMediaType"


class Invalid(ApiError):
    code, reason = 422, "Invalid"


class TooManyRequests(ApiError):
    code, reason = 429, "TooManyRequests"


class InternalError(ApiError):
    code, reason = 500, "InternalError"


class ServiceUnavailable(ApiError):
    code, reason = 503, "ServiceUnavailable"


_BY_REASON: dict[tuple[int, str], type[ApiError]] = {
    (cls.code, cls.reason): cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        AlreadyExists,
        Conflict,
        Gone,
        RequestEntityTooLarge,
        UnsupportedMediaType,
        Invalid,
        TooManyRequests,
        InternalError,
        ServiceUnavailable,
    )
}
_BY_CODE: dict[int, type[ApiError]] = {}
for _cls in reversed(list(_BY_REASON.values())):
    _BY_CODE[_cls.code] = _cls


def from_status(body: dict[str, Any], *, fallback_code: int = 500) -> ApiError:
    """Rebuild the exception a ``Status`` body describes (the inverse of ``to_status``)."""
    code = int(body.get("code") or fallback_code)
    reason = str(body.get("reason") or "")
    cls = _BY_REASON.get((code, reason)) or _BY_CODE.get(code, InternalError)
    details = body.get("details") or {}
    causes = tuple(
        FieldError(
            field=str(c.get("field", "")),
            message=str(c.get("message", "")),
            reason=str(c.get("reason", "FieldValueInvalid")),
        )
        for c in details.get("causes") or ()
    )
    return cls(
        str(body.get("message") or reason or f"HTTP {code}"),
        kind=details.get("kind"),
        name=details.get("name"),
        causes=causes,
        retry_after=details.get("retryAfterSeconds"),
    )

"""Engine ``external``: an OpenAI-compatible server aviator does not run, only probes."""

from __future__ import annotations

from aviator.api.errors import FieldError, Invalid
from aviator.api.replica import Replica

__all__ = ["ExternalEngine"]


class ExternalEngine:
    name = "external"
    health_path = "/v1/models"
    install_hint = ""

    def argv(self, replica: Replica, *, host: str, port: int) -> None:
        return None

    def endpoint(self, replica: Replica, port: int | None) -> str:
        external = replica.spec.external
        if external is None:
            raise Invalid(
                "engine 'external' requires `external.url`",
                kind="Replica",
                name=replica.name,
                causes=(FieldError("spec.external.url", "required for engine 'external'"),),
            )
        return external.url.rstrip("/")

    def env(self, replica: Replica) -> dict[str, str]:
        return {}

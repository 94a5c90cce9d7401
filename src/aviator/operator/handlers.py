"""kopf wiring: which events call which :class:`aviator.operator.reconciler.Reconciler` method.

The handlers are thin by design; every one of them ends in the reconciler:

- a ModelDeployment is created, changed, found at start-up (resume), or its resync timer fires
  -> ``reconcile`` (level-triggered: the same call whatever happened);
- a ModelDeployment is deleted -> ``cleanup``, under the operator's finalizer, which kopf adds
  and removes;
- a Deployment or an EndpointSlice aviator rendered changes -> ``refresh_status`` of its owner,
  so ``readyReplicas`` and ``endpoints`` follow the cluster.

Errors: an API failure becomes ``kopf.TemporaryError`` with exponential backoff
(:func:`aviator.operator.plan.retry_delay`), a spec the plane refuses ``kopf.PermanentError``
(the next change of the CR tries again). kopf keeps its progress in annotations under
``operator.aviator.dev/``, never in ``status`` (aviator's schema owns status).

No module-level registry: :func:`build_registry` makes a fresh one per operator. Handlers MUST
NOT decide anything or talk to the API themselves: that is the reconciler's.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from aviator.api import errors
from aviator.api.replica import LABEL_DEPLOYMENT
from aviator.operator.plan import MANAGED_BY, retry_delay
from aviator.operator.reconciler import Reconciler, SpecRejected
from aviator.operator.resources import DEPLOYMENTS, ENDPOINT_SLICES, MODEL_DEPLOYMENTS

__all__ = ["FINALIZER", "build_registry", "build_settings"]

FINALIZER = "aviator.dev/operator"
_ANNOTATIONS_PREFIX = "operator.aviator.dev"
_SERVICE_NAME = "kubernetes.io/service-name"
_TRANSIENT = (errors.ApiError,)  # from the Kubernetes client: unreachable ones too

log = logging.getLogger("aviator.operator")


def build_settings(*, post_events: bool = True) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=_ANNOTATIONS_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=_ANNOTATIONS_PREFIX, key="last-handled-configuration"
    )
    # Kubernetes Events for what needs a human (retries, refusals), not for every success.
    settings.posting.enabled = post_events
    settings.posting.level = logging.WARNING
    return settings


def build_registry(
    *,
    reconciler: Reconciler,
    login: Callable[[], Awaitable[kopf.ConnectionInfo]],
    resync_s: float | None = 300.0,
    backoff_base_s: float = 1.0,
    backoff_cap_s: float = 60.0,
) -> kopf.OperatorRegistry:
    """The handlers of one operator. ``login`` gives kopf the same credentials as the
    reconciler's client; ``resync_s`` (None: off) re-reconciles every ModelDeployment that often
    to repair drift (an object deleted or edited by hand)."""
    registry = kopf.OperatorRegistry()
    md = (MODEL_DEPLOYMENTS.group, MODEL_DEPLOYMENTS.version, MODEL_DEPLOYMENTS.plural)
    ours = {"app.kubernetes.io/managed-by": MANAGED_BY}

    @kopf.on.login(registry=registry)
    async def _login(**_: Any) -> kopf.ConnectionInfo:
        return await login()

    async def reconcile(body: kopf.Body, retry: int, **_: Any) -> None:
        try:
            outcome = await reconciler.reconcile(body)
        except SpecRejected as exc:
            raise kopf.PermanentError(str(exc)) from None
        except _TRANSIENT as exc:
            raise kopf.TemporaryError(
                str(exc), delay=retry_delay(retry, base_s=backoff_base_s, cap_s=backoff_cap_s)
            ) from None
        # What ``aviator render`` prints as notes (an alternative dropped, an image to pin, no
        # InferencePool) reaches the CR's owner as Warning Events (``kubectl describe md``): each
        # asks for a decision. Once per change, not on every resync.
        for note in outcome.notes:
            kopf.warn(body, reason="RenderNote", message=note)
        if outcome.pruned:
            log.info(
                "%s/%s: pruned %s",
                body.metadata.namespace,
                body.metadata.name,
                ", ".join(map(str, outcome.pruned)),
            )

    for decorator, handler_id in (
        (kopf.on.resume, "resume"),
        (kopf.on.create, "create"),
        (kopf.on.update, "update"),
    ):
        decorator(*md, id=handler_id, registry=registry)(reconcile)

    if resync_s is not None:

        @kopf.timer(*md, id="resync", interval=resync_s, initial_delay=resync_s, registry=registry)
        async def _resync(body: kopf.Body, **_: Any) -> None:
            try:
                await reconciler.reconcile(body)
            except (SpecRejected, *_TRANSIENT) as exc:
                # The timer fires again; the change handlers own retries and refusals.
                log.warning(
                    "%s/%s: resync failed: %s", body.metadata.namespace, body.metadata.name, exc
                )

    @kopf.on.delete(*md, id="cleanup", registry=registry)
    async def _cleanup(body: kopf.Body, retry: int, **_: Any) -> None:
        try:
            await reconciler.cleanup(body)
        except _TRANSIENT as exc:
            raise kopf.TemporaryError(
                str(exc), delay=retry_delay(retry, base_s=backoff_base_s, cap_s=backoff_cap_s)
            ) from None

    async def refresh(namespace: str | None, name: str | None) -> None:
        if not namespace or not name:
            return
        try:
            await reconciler.refresh_status(namespace, name)
        except _TRANSIENT as exc:
            # Event handlers are not retried: the next event, or the resync, catches up.
            log.warning("status of %s/%s not refreshed: %s", namespace, name, exc)

    @kopf.on.event(
        DEPLOYMENTS.group, DEPLOYMENTS.version, DEPLOYMENTS.plural, labels=ours, registry=registry
    )
    async def _deployment_changed(body: kopf.Body, **_: Any) -> None:
        await refresh(body.metadata.namespace, body.metadata.labels.get(LABEL_DEPLOYMENT))

    # The EndpointSlice controller copies the Service's labels onto its slices.
    @kopf.on.event(
        ENDPOINT_SLICES.group,
        ENDPOINT_SLICES.version,
        ENDPOINT_SLICES.plural,
        labels=ours,
        registry=registry,
    )
    async def _endpoints_changed(body: kopf.Body, **_: Any) -> None:
        await refresh(body.metadata.namespace, body.metadata.labels.get(_SERVICE_NAME))

    return registry

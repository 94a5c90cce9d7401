"""``aviator render``: print, without a cluster, what the operator would apply per ModelDeployment.

Reads manifests like ``apply -f`` (files, directories, ``-`` for stdin), admits each
ModelDeployment locally (the same admission the plane runs: defaults, validation with field
paths), renders it with :func:`aviator.k8s.render.render` and prints one multi-document YAML
stream. Other kinds are listed in a comment and skipped: in a cluster they are applied as CRs
themselves. A live object (``aviator get md NAME -o yaml | aviator render -f -``) keeps its
``uid`` (ownerReferences) and ``status.desiredReplicas`` (the plane's replica decision).

This module only reads the given sources and writes stdout/stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from aviator.api import admission, errors
from aviator.api.meta import dns1123_label_problem
from aviator.api.modeldeployment import ModelDeployment
from aviator.cli.manifests import Document, ManifestError, desired_object, load, resolve_namespace
from aviator.k8s.crds import CRD_KINDS, UPSTREAM_KINDS
from aviator.k8s.documents import dump_documents
from aviator.k8s.render import (
    EndpointPicker,
    RenderError,
    RenderOptions,
    default_aviator_image,
    parse_engine_images,
    parse_kubernetes_version,
    render,
)

# parse_engine_images lives in the pure renderer (the install bundle validates with it too) and is
# re-exported here, where ``aviator operator`` takes it from.
__all__ = ["parse_endpoint_picker", "parse_engine_images", "render_command", "render_documents"]


def parse_endpoint_picker(value: str | None, *, fail_open: bool) -> EndpointPicker | None:
    """``SERVICE[:PORT]`` of the endpoint picker, or None."""
    if value is None:
        return None
    name, sep, port_text = value.partition(":")
    port = 9002
    if sep:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise RenderError(f"--endpoint-picker: port must be 1-65535 (got {port_text!r})")
        port = int(port_text)
    if problem := dns1123_label_problem(name):
        raise RenderError(f"--endpoint-picker: service name {name!r}: {problem}")
    return EndpointPicker(
        name=name, port=port, failure_mode="FailOpen" if fail_open else "FailClose"
    )


def _model_deployment(doc: Document, namespace: str | None) -> tuple[ModelDeployment, int | None]:
    admitted = admission.admit(desired_object(doc, namespace), kind=doc.kind, namespace=namespace)
    md = ModelDeployment.from_raw(admitted)
    # A live object (from `get -o yaml`) keeps its identity and the plane's replica decision.
    uid = doc.body["metadata"].get("uid")
    if isinstance(uid, str) and uid:
        md.metadata.uid = uid
    status: Any = doc.body.get("status")
    desired = status.get("desiredReplicas") if isinstance(status, dict) else None
    return md, desired if isinstance(desired, int) and not isinstance(desired, bool) else None


def render_documents(
    documents: list[Document], *, options: RenderOptions, default_namespace: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Objects for every ModelDeployment in ``documents`` and the notes; raises ``RenderError``
    listing every document that failed."""
    objects: list[dict[str, Any]] = []
    notes: list[str] = []
    problems: list[str] = []
    found = False
    for doc in documents:
        if doc.kind.kind != "ModelDeployment":
            home = (
                "applied as a custom resource itself"
                if doc.kind.kind in CRD_KINDS
                else f"not a CRD; in a cluster: {UPSTREAM_KINDS.get(doc.kind.kind, 'n/a')}"
            )
            notes.append(f"{doc.where}: {doc.ref} skipped: {home}")
            continue
        found = True
        namespace = resolve_namespace(doc, default_namespace)
        try:
            md, desired = _model_deployment(doc, namespace)
            opts = options if desired is None else _with_desired(options, desired)
            rendered = render(md, options=opts)
        except (errors.ApiError, RenderError) as exc:
            problems.append(f"{doc.where}: {exc}")
            continue
        objects.extend(rendered.objects)
        notes.extend(rendered.notes)
    if problems:
        raise RenderError("\n".join(problems))
    if not found:
        raise RenderError("no ModelDeployment in the given manifests")
    return objects, notes


def _with_desired(options: RenderOptions, desired: int) -> RenderOptions:
    return RenderOptions(
        aviator_image=options.aviator_image,
        engine_images=options.engine_images,
        endpoint_picker=options.endpoint_picker,
        kubernetes_version=options.kubernetes_version,
        desired_replicas=desired,
    )


def render_command(
    filenames: list[str] = typer.Option(
        ..., "--filename", "-f", help="Manifest file, directory or '-' for stdin (repeatable)."
    ),
    k8s_version: str = typer.Option(
        "1.34", "--k8s-version", help="Kubernetes version to render for (1.34 or later)."
    ),
    namespace: str = typer.Option(
        "default", "--namespace", "-n", help="Namespace of documents that name none."
    ),
    image: str = typer.Option(
        default_aviator_image(), "--image", help="aviator's image (runs the simulator)."
    ),
    engine_image: list[str] = typer.Option(
        [],
        "--engine-image",
        help="ENGINE[@DRIVER]=IMAGE: the image of an engine, on one DRA driver's devices with "
        "@DRIVER (e.g. vllm@gpu.amd.com=rocm/vllm:TAG); repeatable.",
    ),
    endpoint_picker: str | None = typer.Option(
        None,
        "--endpoint-picker",
        help="SERVICE[:PORT] of a Gateway API Inference Extension endpoint picker to reference "
        "from each InferencePool (port 9002 by default).",
    ),
    fail_open: bool = typer.Option(
        False, "--fail-open", help="With --endpoint-picker: route on when the picker fails."
    ),
) -> None:
    """Print what the operator would apply for each ModelDeployment (no cluster needed).

    Deployment, Service, ResourceClaimTemplate (resource.k8s.io/v1), InferencePool
    (inference.networking.k8s.io/v1), HorizontalPodAutoscaler and PodDisruptionBudget, as one
    multi-document YAML stream; notes go to stderr.
    """
    try:
        options = RenderOptions(
            aviator_image=image,
            engine_images=parse_engine_images(engine_image),
            endpoint_picker=parse_endpoint_picker(endpoint_picker, fail_open=fail_open),
            kubernetes_version=parse_kubernetes_version(k8s_version),
        )
        documents = load([Path(f) if f != "-" else f for f in filenames], stdin=sys.stdin)
        objects, notes = render_documents(documents, options=options, default_namespace=namespace)
    except (ManifestError, RenderError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(dump_documents(objects), nl=False)

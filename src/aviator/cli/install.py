"""``aviator install --print``: the install bundle as YAML for ``kubectl apply -f -``.

The bundle itself is built by the pure :func:`aviator.k8s.install.bundle`; this command only
prints it. aviator applies nothing to a cluster from here: ``--print`` is required so that a
future ``install`` that talks to a cluster cannot be triggered by accident.
"""

from __future__ import annotations

import typer

from aviator.k8s.documents import dump_documents
from aviator.k8s.install import InstallError, InstallOptions, bundle
from aviator.k8s.render import default_aviator_image

__all__ = ["install"]


def install(
    print_: bool = typer.Option(
        False, "--print", help="Print the manifests (required: nothing is applied from here)."
    ),
    namespace: str = typer.Option(
        "aviator-system", "--namespace", "-n", help="Namespace of the operator and the gateway."
    ),
    image: str = typer.Option(
        default_aviator_image(), "--image", help="aviator's image for the operator and gateway."
    ),
) -> None:
    """Print CRDs, namespace, service accounts, RBAC, the operator and the gateway.

    Apply with: aviator install --print | kubectl apply --server-side -f -
    """
    if not print_:
        typer.echo(
            "error: add --print and pipe to kubectl: "
            "aviator install --print | kubectl apply --server-side -f -",
            err=True,
        )
        raise typer.Exit(2)
    try:
        objects = bundle(InstallOptions(namespace=namespace, image=image))
    except InstallError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(dump_documents(objects), nl=False)

"""``aviator install --print``: the install bundle as YAML for ``kubectl apply -f -``.

The bundle itself is built by the pure :func:`aviator.k8s.install.bundle`; this command only
reads the identity files it is given and prints the bundle. aviator applies nothing to a cluster
from here: ``--print`` is required so that a future ``install`` that talks to a cluster cannot be
triggered by accident.
"""

from __future__ import annotations

from pathlib import Path

import typer

from aviator.k8s.documents import dump_documents
from aviator.k8s.install import IdentityConfig, InstallError, InstallOptions, bundle
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
        default_aviator_image(),
        "--image",
        help="aviator's image: the operator, the gateway and the simulator Pods.",
    ),
    engine_image: list[str] = typer.Option(
        [],
        "--engine-image",
        help="ENGINE[@DRIVER]=IMAGE for the operator's engine Pods (repeatable; as `aviator "
        "render --engine-image`).",
    ),
    identity_config: Path | None = typer.Option(
        None,
        "--identity-config",
        metavar="FILE",
        help="The gateway's identity configuration (trusted issuers of agent tokens); shipped "
        "in a ConfigMap mounted read-only. Without it the gateway trusts no agent token.",
    ),
    identity_file: list[Path] = typer.Option(
        [],
        "--identity-file",
        metavar="FILE",
        help="A file the identity configuration names, e.g. an issuer's JWKS (repeatable); it "
        "goes beside the configuration, so name it by its file name there.",
    ),
    audit_claim: str | None = typer.Option(
        None,
        "--audit-claim",
        metavar="PVC",
        help="PersistentVolumeClaim for the gateway's audit log (default: an emptyDir, lost "
        "with the Pod).",
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
        identity = _identity(identity_config, identity_file)
        objects = bundle(
            InstallOptions(
                namespace=namespace,
                image=image,
                engine_images=tuple(engine_image),
                identity=identity,
                audit_claim=audit_claim,
            )
        )
    except InstallError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(dump_documents(objects), nl=False)


def _identity(config: Path | None, extra: list[Path]) -> IdentityConfig | None:
    if config is None:
        if extra:
            raise InstallError("--identity-file needs --identity-config")
        return None
    files: dict[str, str] = {}
    for path in (config, *extra):
        if path.name in files:
            raise InstallError(f"--identity-file: two files are named {path.name!r}")
        try:
            files[path.name] = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InstallError(f"{path}: {exc}") from None
    return IdentityConfig(name=config.name, files=files)

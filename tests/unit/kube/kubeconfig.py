"""One writer of test kubeconfigs, for the tests that load credentials the way a developer's
machine does (the gateway's and the operator's kubernetes modes, and the loader itself)."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_kubeconfig(
    path: Path,
    server: str,
    *,
    token: str = "not-a-real-token",
    contexts: tuple[str, ...] = ("kmock",),
    namespace: str | None = None,
) -> Path:
    """A kubeconfig at ``path`` naming ``server`` with a bearer ``token``: one context per name
    in ``contexts`` (the first is current; the others, if any, in ``namespace``)."""
    entries = [
        {
            "name": name,
            "context": {
                "cluster": "cluster",
                "user": "user",
                **({"namespace": namespace} if namespace and i else {}),
            },
        }
        for i, name in enumerate(contexts)
    ]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "cluster", "cluster": {"server": server}}],
                "users": [{"name": "user", "user": {"token": token}}],
                "contexts": entries,
                "current-context": contexts[0],
            }
        )
    )
    return path

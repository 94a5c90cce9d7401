"""The API's names on the wire: group, version, and the well-known labels and finalizers.

Plain constants, importable without pydantic or any kind's model: the registry of kinds and the
CLI commands that only name objects (``get``, ``delete``, ``describe``, ``token``, ``grant``) read
them from here, with the checks of names (DNS-1123).
``aviator.api.meta`` and ``aviator.api.replica`` re-export the ones they defined before.
"""

from __future__ import annotations

import re

API_GROUP = "aviator.dev"
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"

LABEL_DEPLOYMENT = "aviator.dev/model-deployment"
"""Label on every Replica naming the ModelDeployment it serves (select with ``-l``)."""
LABEL_TEMPLATE_HASH = "aviator.dev/template-hash"
"""Label with the hash of the template a Replica was made from."""
RUNTIME_FINALIZER = "aviator.dev/runtime"
"""Held on a Replica while its engine may still run; removed once the runtime stopped it."""

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


def dns1123_label_problem(value: str) -> str | None:
    """Why ``value`` is not a DNS-1123 label, or None when it is one."""
    if not value:
        return "must not be empty"
    if len(value) > 63:
        return f"must be no more than 63 characters (got {len(value)})"
    if not _DNS1123_LABEL.match(value):
        return (
            "a DNS-1123 label must consist of lower case alphanumeric characters or '-', "
            "and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc')"
        )
    return None


def dns1123_subdomain_problem(value: str) -> str | None:
    """Why ``value`` is not a DNS-1123 subdomain, or None when it is one."""
    if not value:
        return "must not be empty"
    if len(value) > 253:
        return f"must be no more than 253 characters (got {len(value)})"
    if not _DNS1123_SUBDOMAIN.match(value):
        return (
            "a DNS-1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
            "and must start and end with an alphanumeric character (e.g. 'example.com')"
        )
    return None

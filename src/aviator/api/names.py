"""The API's names on the wire: group, version, and the well-known labels and finalizers.

Plain constants, importable without pydantic or any kind's model: the registry of kinds and the
CLI commands that only name objects (``get``, ``delete``, ``describe``) read them from here.
``aviator.api.meta`` and ``aviator.api.replica`` re-export the ones they defined before.
"""

from __future__ import annotations

API_GROUP = "aviator.dev"
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"

LABEL_DEPLOYMENT = "aviator.dev/model-deployment"
"""Label on every Replica naming the ModelDeployment it serves (select with ``-l``)."""
LABEL_TEMPLATE_HASH = "aviator.dev/template-hash"
"""Label with the hash of the template a Replica was made from."""
RUNTIME_FINALIZER = "aviator.dev/runtime"
"""Held on a Replica while its engine may still run; removed once the runtime stopped it."""

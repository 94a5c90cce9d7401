"""A cluster without the InferencePool CRD (no Gateway API Inference Extension), against kmock:
the type answers 404 for every request and discovery omits it, as on a real API server.

``--inference-pool auto`` (the default) applies everything else and says in status why no pool
exists; deleting the ModelDeployment still cleans up and removes the finalizer. ``on`` makes the
missing type an error, ``off`` never applies a pool. And "this object does not exist" stays
apart from "this type is not served"."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest
from tests.unit.operator.cluster import (
    DEPLOYMENTS,
    MD,
    VersionedEmulator,
    configuration,
    declare,
    eventually,
    objects,
    running_operator,
    unserve,
)

from aviator.api import errors
from aviator.k8s.render import RenderOptions
from aviator.kube.api import KubeApi
from aviator.operator.handlers import FINALIZER
from aviator.operator.objects import NotServed, ObjectApi
from aviator.operator.plan import INFERENCE_POOL
from aviator.operator.reconciler import PoolMode, Reconciler
from aviator.operator.resources import INFERENCE_POOLS, MODEL_DEPLOYMENTS, ObjectRef

pytestmark = pytest.mark.kmock(cls=VersionedEmulator)

NS = "team-a"
POOLS = "inference.networking.k8s.io/v1/inferencepools"
HPAS = "autoscaling/v2/horizontalpodautoscalers"
PDBS = "policy/v1/poddisruptionbudgets"
SERVICES = "v1/services"
RENDERED = (DEPLOYMENTS, SERVICES, POOLS, HPAS, PDBS)


def cr() -> dict[str, Any]:
    """A ModelDeployment rendered as Deployment, Service, InferencePool, HPA and PDB."""
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "chat", "namespace": NS, "uid": "u-1", "generation": 1},
        "spec": {
            "model": {"name": "qwen", "source": "hf://Qwen/Qwen2.5-0.5B-Instruct"},
            "replicas": {"min": 2, "max": 4},
        },
    }


def present(cluster: kmock.KubernetesEmulator) -> set[str]:
    return {r for r in RENDERED if (NS, "chat") in objects(cluster, r)}


def pool_condition(cluster: kmock.KubernetesEmulator) -> dict[str, Any] | None:
    md = objects(cluster, MD).get((NS, "chat")) or {}
    found = [
        c for c in (md.get("status") or {}).get("conditions") or () if c["type"] == "InferencePool"
    ]
    return found[0] if found else None


@pytest.fixture
def cluster(kmock: VersionedEmulator) -> VersionedEmulator:
    declare(kmock)
    return kmock


@pytest.fixture
def no_pools(cluster: VersionedEmulator) -> VersionedEmulator:
    unserve(cluster, POOLS)
    return cluster


@pytest.fixture
async def api(cluster: VersionedEmulator) -> AsyncIterator[ObjectApi]:
    async with KubeApi(configuration(cluster)) as kube:
        yield ObjectApi(kube=kube)


def reconciler(api: ObjectApi, mode: PoolMode = "auto") -> Reconciler:
    return Reconciler(
        api=api,
        field_manager="aviator",
        render_options=RenderOptions(aviator_image="aviator:test"),
        inference_pool=mode,
    )


async def test_the_operator_deploys_and_deletes_without_the_pool_crd(
    no_pools: VersionedEmulator, api: ObjectApi
) -> None:
    async with running_operator(no_pools):
        await api.create(cr())
        await eventually(lambda: present(no_pools) == {DEPLOYMENTS, SERVICES, HPAS, PDBS})
        condition = await eventually(lambda: pool_condition(no_pools))
        assert (condition["status"], condition["reason"]) == ("False", "NotServed")
        assert "inference.networking.k8s.io/v1 inferencepools" in condition["message"]
        await eventually(
            lambda: (
                FINALIZER in objects(no_pools, MD)[(NS, "chat")]["metadata"].get("finalizers", [])
            )
        )
        await api.delete(ObjectRef(MODEL_DEPLOYMENTS.api_version, "ModelDeployment", NS, "chat"))
        # The finalizer is removed (cleanup found nothing to prune of the unserved type).
        await eventually(lambda: (NS, "chat") not in objects(no_pools, MD))
    assert present(no_pools) == set()


async def test_reconcile_applies_the_rest_and_notes_the_missing_pool(
    no_pools: VersionedEmulator, api: ObjectApi
) -> None:
    await api.create(cr())
    outcome = await reconciler(api).reconcile(cr())
    assert {r.kind for r in outcome.applied} == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    assert any(
        "does not serve inference.networking.k8s.io/v1 inferencepools" in n for n in outcome.notes
    )
    conditions = {c.type: c for c in outcome.status.conditions}
    assert conditions[INFERENCE_POOL].status == "False"
    assert present(no_pools) == {DEPLOYMENTS, SERVICES, HPAS, PDBS}
    assert await reconciler(api).cleanup(cr()) != []
    assert present(no_pools) == set()


async def test_once_the_crd_is_installed_the_pool_is_applied_and_status_says_so(
    no_pools: VersionedEmulator, api: ObjectApi
) -> None:
    await api.create(cr())
    await reconciler(api).reconcile(cr())
    assert pool_condition(no_pools)["status"] == "False"  # type: ignore[index]
    no_pools.unserved.clear()  # the Inference Extension is installed
    declare(no_pools)
    await reconciler(api).reconcile(cr())
    assert POOLS in present(no_pools)
    condition = pool_condition(no_pools)
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("True", "Applied")


async def test_a_cluster_with_the_crd_shows_no_pool_condition(
    cluster: VersionedEmulator, api: ObjectApi
) -> None:
    await api.create(cr())
    await reconciler(api).reconcile(cr())
    assert present(cluster) == set(RENDERED)
    assert pool_condition(cluster) is None


async def test_on_makes_the_missing_type_an_error(
    no_pools: VersionedEmulator, api: ObjectApi
) -> None:
    await api.create(cr())
    with pytest.raises(NotServed, match=r"does not serve inference\.networking\.k8s\.io/v1 "):
        await reconciler(api, "on").reconcile(cr())


async def test_off_applies_no_pool_and_prunes_an_earlier_one(
    cluster: VersionedEmulator, api: ObjectApi
) -> None:
    await api.create(cr())
    await reconciler(api).reconcile(cr())
    assert POOLS in present(cluster)
    outcome = await reconciler(api, "off").reconcile(cr())
    assert [r.kind for r in outcome.pruned] == ["InferencePool"]
    assert present(cluster) == {DEPLOYMENTS, SERVICES, HPAS, PDBS}
    assert pool_condition(cluster) is None


async def test_not_served_is_told_apart_from_not_found(
    no_pools: VersionedEmulator, api: ObjectApi
) -> None:
    assert await api.served(INFERENCE_POOLS) is False
    assert await api.served(MODEL_DEPLOYMENTS) is True
    with pytest.raises(NotServed):
        await api.list(INFERENCE_POOLS, namespace=NS)
    pool = {
        "apiVersion": INFERENCE_POOLS.api_version,
        "kind": INFERENCE_POOLS.kind,
        "metadata": {"name": "p", "namespace": NS},
    }
    with pytest.raises(NotServed):
        await api.create(pool)
    # An object of a served type that does not exist is the ordinary 404, not NotServed.
    ref = ObjectRef(MODEL_DEPLOYMENTS.api_version, "ModelDeployment", NS, "absent")
    assert await api.get(ref) is None
    with pytest.raises(errors.NotFound) as raised:
        await api.patch(
            {
                "apiVersion": ref.api_version,
                "kind": ref.kind,
                "metadata": {"name": "absent", "namespace": NS},
            }
        )
    assert not isinstance(raised.value, NotServed)

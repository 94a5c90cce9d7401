from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aviator.api import admission, kinds
from aviator.api.meta import find_condition, set_condition
from aviator.api.modeldeployment import ModelDeployment
from aviator.api.replica import LABEL_DEPLOYMENT, READY, RUNTIME_FINALIZER, Replica
from aviator.controllers import plans

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def deployment(
    *, replicas: int = 2, model: str = "m", engine: str = "sim", uid: str = "uid-1"
) -> ModelDeployment:
    raw = admission.admit(
        {
            "metadata": {"name": "chat"},
            "spec": {"model": {"name": model}, "engine": engine, "replicas": replicas},
        },
        kind=kinds.MODEL_DEPLOYMENT,
        namespace="default",
    )
    raw["metadata"].update(uid=uid, generation=1)
    return ModelDeployment.from_raw(raw)


def ready(replica: Replica, port: int = 9000) -> Replica:
    status = replica.status.model_copy(
        update={
            "phase": "Running",
            "endpoint": f"http://127.0.0.1:{port}",
            "conditions": set_condition(
                [], type=READY, status="True", reason="ProbeSucceeded", message="", now=NOW
            ),
        }
    )
    return replica.model_copy(update={"status": status})


def test_creates_deterministic_owned_replicas() -> None:
    md = deployment(replicas=2)
    plan = plans.plan_replicas(md, [])
    names = [r.name for r in plan.create]
    assert names == [f"chat-{plan.template_hash}-0", f"chat-{plan.template_hash}-1"]
    replica = plan.create[0]
    assert replica.spec.engine == "sim"
    assert replica.spec.template_hash == plan.template_hash
    assert replica.metadata.labels[LABEL_DEPLOYMENT] == "chat"
    assert replica.metadata.finalizers == [RUNTIME_FINALIZER]
    ref = replica.metadata.owner_references[0]
    assert (ref.kind, ref.name, ref.uid, ref.controller) == (
        "ModelDeployment",
        "chat",
        "uid-1",
        True,
    )
    assert plans.plan_replicas(md, list(plan.create)).create == ()


def test_auto_engine_resolves_to_the_simulator() -> None:
    assert plans.resolve_engine(deployment(engine="auto")) == "sim"


def test_scale_down_removes_the_highest_indexes() -> None:
    md = deployment(replicas=3)
    existing = list(plans.plan_replicas(md, []).create)
    plan = plans.plan_replicas(deployment(replicas=1), existing)
    assert plan.delete == tuple(sorted(r.name for r in existing[1:]))


def test_rollout_keeps_old_replicas_until_new_ones_are_ready() -> None:
    old = [ready(r) for r in plans.plan_replicas(deployment(model="a"), []).create]
    md_new = deployment(model="b")
    plan = plans.plan_replicas(md_new, old)
    assert len(plan.create) == 2 and plan.delete == ()
    new_ready = [ready(r) for r in plan.create]
    plan = plans.plan_replicas(md_new, old + new_ready[:1])
    assert plan.delete == ()
    plan = plans.plan_replicas(md_new, old + new_ready)
    assert set(plan.delete) == {r.name for r in old}


def test_status_counts_and_conditions() -> None:
    md = deployment(replicas=2)
    plan = plans.plan_replicas(md, [])
    replicas = [ready(plan.create[0], 9001), plan.create[1]]
    status = plans.deployment_status(md, replicas, template_hash=plan.template_hash, now=NOW)
    assert (status.replicas, status.ready_replicas, status.updated_replicas) == (2, 1, 2)
    assert [e.url for e in status.endpoints] == ["http://127.0.0.1:9001"]
    assert find_condition(status.conditions, "Available").status == "False"  # type: ignore[union-attr]
    assert find_condition(status.conditions, "Progressing").reason == "ReplicasUpdating"  # type: ignore[union-attr]
    status = plans.deployment_status(
        md, [ready(r) for r in plan.create], template_hash=plan.template_hash, now=NOW
    )
    assert find_condition(status.conditions, "Available").status == "True"  # type: ignore[union-attr]
    assert find_condition(status.conditions, "Progressing").reason == "NewReplicasAvailable"  # type: ignore[union-attr]
    assert find_condition(status.conditions, "Degraded").status == "False"  # type: ignore[union-attr]
    assert status.observed_generation == 1


def test_a_failing_replica_degrades_the_deployment() -> None:
    md = deployment(replicas=1)
    replica = plans.plan_replicas(md, []).create[0]
    failed = replica.model_copy(
        update={
            "status": replica.status.model_copy(
                update={"phase": "Failed", "restarts": 3, "message": "exit code 1"}
            )
        }
    )
    status = plans.deployment_status(
        md, [failed], template_hash=replica.spec.template_hash, now=NOW
    )
    degraded = find_condition(status.conditions, "Degraded")
    assert degraded is not None and degraded.status == "True"
    assert "3 restart(s): exit code 1" in degraded.message


def owned(md: ModelDeployment, replicas: list[Replica]) -> list[Replica]:
    raws: list[dict[str, Any]] = [r.to_raw() for r in replicas]
    return plans.owned_by(md, raws)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 4), st.sampled_from(["a", "b", "c"])), min_size=1, max_size=5
    ),
    st.randoms(use_true_random=False),
)
def test_any_sequence_of_specs_converges_without_duplicates(
    steps: list[tuple[int, str]], rnd: Any
) -> None:
    replicas: dict[str, Replica] = {}
    for count, model in steps:
        md = deployment(replicas=count, model=model)
        for _ in range(10):  # reconcile rounds; replicas become ready at random
            plan = plans.plan_replicas(md, owned(md, list(replicas.values())))
            assert len({r.name for r in plan.create}) == len(plan.create)
            for r in plan.create:
                assert r.name not in replicas
                replicas[r.name] = r
            current_ready = [
                r
                for r in replicas.values()
                if r.spec.template_hash == plan.template_hash and plans.is_ready(r)
            ]
            for name in plan.delete:
                if replicas[name].spec.template_hash != plan.template_hash:
                    assert count == 0 or len(current_ready) >= count
                del replicas[name]
            for name, r in list(replicas.items()):
                if not plans.is_ready(r) and rnd.random() < 0.7:
                    replicas[name] = ready(r)
        for name, r in list(replicas.items()):
            replicas[name] = ready(r)
        final = plans.plan_replicas(md, owned(md, list(replicas.values())))
        for name in final.delete:
            del replicas[name]
        assert sorted(replicas) == [
            plans.replica_name("chat", final.template_hash, i) for i in range(count)
        ]

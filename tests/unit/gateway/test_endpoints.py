from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aviator.gateway.endpoints import Endpoint, EndpointTable, endpoint_of

from .conftest import replica


def test_a_ready_replica_is_routed_by_its_model_name() -> None:
    table = EndpointTable()
    assert table.apply("ADDED", replica("r1", model="llama", url="http://10.0.0.1:8000/"))
    assert table.lookup("llama") == (
        Endpoint(key="default/r1", model="llama", url="http://10.0.0.1:8000"),
    )
    assert table.lookup("other") is None
    assert table.models() == ["llama"]
    assert len(table) == 1


def test_unready_replicas_make_a_model_known_but_unroutable() -> None:
    table = EndpointTable()
    table.apply("ADDED", replica("a", ready=False))
    table.apply("ADDED", replica("b", url=None))
    table.apply("ADDED", replica("c", deleting=True))
    assert table.lookup("m") == ()
    assert table.models() == ["m"]
    assert table.ready_counts() == {"m": 0}


def test_ready_going_false_removes_the_endpoint_and_delete_forgets_the_model() -> None:
    table = EndpointTable()
    table.apply("ADDED", replica("a"))
    table.apply("ADDED", replica("b"))
    assert [e.key for e in table.lookup("m") or ()] == ["default/a", "default/b"]
    assert table.apply("MODIFIED", replica("a", ready=False))
    assert [e.key for e in table.lookup("m") or ()] == ["default/b"]
    assert table.endpoint("default/a") is None
    table.apply("DELETED", replica("a", ready=False))
    table.apply("DELETED", replica("b"))
    assert table.lookup("m") is None
    assert table.models() == []


def test_a_replica_that_changes_model_moves_between_indexes() -> None:
    table = EndpointTable()
    table.apply("ADDED", replica("a", model="m1"))
    table.apply("MODIFIED", replica("a", model="m2"))
    assert table.lookup("m1") is None
    assert [e.model for e in table.lookup("m2") or ()] == ["m2"]


def test_unchanged_events_and_other_types_report_no_change() -> None:
    table = EndpointTable()
    table.apply("ADDED", replica("a"))
    version = table.version
    assert not table.apply("MODIFIED", replica("a", rv=2))
    assert not table.apply("BOOKMARK", {"metadata": {"resourceVersion": "9"}})
    assert not table.apply("DELETED", replica("zzz"))
    assert not table.apply("ADDED", {"metadata": {}})
    assert table.version == version


def test_routability_needs_a_true_ready_condition_and_an_http_url() -> None:
    assert endpoint_of(replica("a", url="unix:///tmp/sock")) is None
    no_conditions = replica("a")
    no_conditions["status"]["conditions"] = []
    assert endpoint_of(no_conditions) is None
    no_model = replica("a")
    del no_model["spec"]["model"]
    assert endpoint_of(no_model) is None
    assert endpoint_of(replica("a", url="https://x.example/")) == Endpoint(
        "default/a", "m", "https://x.example"
    )


def test_resync_replaces_everything() -> None:
    table = EndpointTable()
    table.apply("ADDED", replica("a", model="old"))
    table.resync([replica("b", namespace="ns2"), replica("c", ready=False, model="n")])
    assert table.lookup("old") is None
    assert [e.key for e in table.lookup("m") or ()] == ["ns2/b"]
    assert table.lookup("n") == ()


# -- property: any event sequence leaves the table equal to a straightforward model ---------------

_names = st.sampled_from(["a", "b", "c", "d"])
_namespaces = st.sampled_from(["default", "team"])
_objects = st.builds(
    lambda name, ns, model, ready, url, deleting: replica(
        name, namespace=ns, model=model, ready=ready, url=url, deleting=deleting
    ),
    _names,
    _namespaces,
    st.sampled_from(["m1", "m2"]),
    st.booleans(),
    st.sampled_from([None, "http://h:1", "http://h:2/", "ftp://h"]),
    st.booleans(),
)
_steps = st.one_of(
    st.tuples(st.sampled_from(["ADDED", "MODIFIED", "DELETED"]), _objects),
    st.tuples(st.just("RESYNC"), st.lists(_objects, max_size=6)),
)


def _expected(state: dict[str, dict[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for key, obj in sorted(state.items()):
        model = obj["spec"]["model"]["name"]
        out.setdefault(model, [])
        status = obj["status"]
        url = status.get("endpoint")
        if (
            status["conditions"][0]["status"] == "True"
            and url is not None
            and url.startswith("http")
            and "deletionTimestamp" not in obj["metadata"]
        ):
            out[model].append((key, url.rstrip("/")))
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(_steps, max_size=30))
def test_any_event_sequence_matches_the_model(steps: list[tuple[str, Any]]) -> None:
    table = EndpointTable()
    state: dict[str, dict[str, Any]] = {}
    for kind, payload in steps:
        if kind == "RESYNC":
            table.resync(payload)
            state = {f"{o['metadata']['namespace']}/{o['metadata']['name']}": o for o in payload}
        else:
            key = f"{payload['metadata']['namespace']}/{payload['metadata']['name']}"
            table.apply(kind, payload)
            if kind == "DELETED":
                state.pop(key, None)
            else:
                state[key] = payload
        expected = _expected(state)
        assert table.models() == sorted(expected)
        for model, endpoints in expected.items():
            got = table.lookup(model)
            assert got is not None
            assert [(e.key, e.url) for e in got] == endpoints
            assert all(e.model == model for e in got)
            assert table.keys(model) == tuple(key for key, _ in endpoints)
        assert table.keys("no-such-model") == ()
        assert len(table) == sum(len(v) for v in expected.values())

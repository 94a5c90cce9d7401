"""Tables, JSONPath columns, ages and describe pages: pure functions over wire dicts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aviator.api import errors, kinds
from aviator.api.kinds import PrinterColumn
from aviator.cli import printing
from aviator.cli.printing import JsonPathError

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


def ts(delta: timedelta) -> str:
    return (NOW - delta).strftime("%Y-%m-%dT%H:%M:%SZ")


OBJ: dict[str, Any] = {
    "metadata": {
        "name": "chat",
        "namespace": "default",
        "creationTimestamp": ts(timedelta(minutes=3)),
        "labels": {"aviator.dev/model-deployment": "chat"},
    },
    "spec": {"model": {"name": "org/m"}, "engine": "sim", "replicas": {"min": 2, "max": 2}},
    "status": {
        "readyReplicas": 2,
        "desiredReplicas": 2,
        "endpoints": [
            {"replica": "chat-0", "url": "http://a"},
            {"replica": "chat-1", "url": "http://b"},
        ],
        "conditions": [
            {
                "type": "Available",
                "status": "True",
                "reason": "R",
                "message": "2/2 ready",
                "lastTransitionTime": ts(timedelta(seconds=5)),
            },
            {"type": "Degraded", "status": "False"},
        ],
        "flags": [True, None],
    },
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (".spec.model.name", ["org/m"]),
        ("{.spec.engine}", ["sim"]),
        ("$.status.readyReplicas", [2]),
        (".status.endpoints[*].url", ["http://a", "http://b"]),
        (".status.endpoints[1].replica", ["chat-1"]),
        (".status.endpoints[-1].replica", ["chat-1"]),
        (".status.endpoints[5].replica", []),
        (".status.conditions[?(@.type=='Available')].status", ["True"]),
        ('.status.conditions[?(@.type == "Degraded")].status', ["False"]),
        (".status.conditions[?(@.type!='Available')].type", ["Degraded"]),
        (".status.conditions[?(@.type=='Ready')].status", []),
        (".metadata.labels['aviator.dev/model-deployment']", ["chat"]),
        (".spec.missing.deeper", []),
        (".spec.replicas[*]", [2, 2]),
        (".spec.model.name.more", []),
    ],
)
def test_jsonpath(expr: str, expected: list[Any]) -> None:
    assert printing.evaluate(OBJ, expr) == expected


@pytest.mark.parametrize("expr", ["", "spec", ".a[", ".a[?(@.x=1)]", ".a..b"])
def test_jsonpath_outside_the_subset_is_refused(expr: str) -> None:
    with pytest.raises(JsonPathError):
        printing.compile_jsonpath(expr)


def test_every_printer_column_of_every_kind_compiles() -> None:
    for info in kinds.KINDS.values():
        for column in info.columns:
            printing.compile_jsonpath(column.json_path)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (5, "5s"),
        (119, "119s"),
        (120, "2m"),
        (200, "3m20s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 300, "3h5m"),
        (10 * 3600, "10h"),
        (47 * 3600, "47h"),
        (2 * 86400, "2d"),
        (4 * 86400 + 3 * 3600, "4d3h"),
        (20 * 86400, "20d"),
        (730 * 86400, "2y"),
        (800 * 86400, "2y70d"),
        (3000 * 86400, "8y"),
    ],
)
def test_human_duration_matches_kubectl(seconds: float, text: str) -> None:
    assert printing.human_duration(seconds) == text


def test_age() -> None:
    assert printing.age(ts(timedelta(hours=5)), now=NOW) == "5h"
    assert printing.age("2026-11-27T11:59:55+00:00", now=NOW) == "5s"
    assert printing.age(None, now=NOW) == "<none>"
    assert printing.age("yesterday", now=NOW) == "<invalid>"


def test_cells() -> None:
    def cell(path: str, type_: str = "string") -> str:
        return printing.cell(OBJ, PrinterColumn("X", path, type_), now=NOW)

    assert cell(".status.endpoints[*].url") == "http://a,http://b"
    assert cell(".metadata.creationTimestamp", "date") == "3m"
    assert cell(".status.unknown") == "<none>"
    assert cell(".status.flags[*]") == "true"
    assert cell(".spec.replicas") == '{"min":2,"max":2}'


def test_table_columns_and_wide() -> None:
    headers, rows = printing.table(kinds.MODEL_DEPLOYMENT, [OBJ], now=NOW)
    assert headers == ["NAME", "MODEL", "ENGINE", "READY", "DESIRED", "AVAILABLE", "AGE"]
    assert rows == [["chat", "org/m", "sim", "2", "2", "True", "3m"]]
    headers, rows = printing.table(
        kinds.MODEL_DEPLOYMENT, [OBJ], now=NOW, wide=True, all_namespaces=True
    )
    assert headers[:2] == ["NAMESPACE", "NAME"] and headers[-3:] == ["PRIORITY", "ENDPOINTS", "AGE"]
    assert rows[0][:2] == ["default", "chat"] and rows[0][-3:] == [
        "<none>",
        "http://a,http://b",
        "3m",
    ]


def test_render_table_aligns_like_kubectl() -> None:
    text = printing.render_table(
        ["NAME", "READY", "AGE"], [["a-long-name", "1", "5s"], ["b", "10", "3m"]]
    )
    assert text.splitlines() == [
        "NAME          READY   AGE",
        "a-long-name   1       5s",
        "b             10      3m",
    ]


def test_table_writer_remembers_widths_for_streamed_rows() -> None:
    writer = printing.TableWriter()
    first = writer.render([["NAME", "AGE"], ["chat", "1s"]])
    later = writer.render([["x", "2s"]])
    assert first == ["NAME   AGE", "chat   1s"]
    assert later == ["x      2s"]
    assert writer.render([["much-longer", "3s"]]) == ["much-longer   3s"]


def test_yaml_json_and_list() -> None:
    listing = printing.as_list([OBJ], resource_version="9")
    assert listing["kind"] == "List" and listing["metadata"] == {"resourceVersion": "9"}
    assert (
        printing.to_yaml({"b": 1, "a": "2026-11-27T09:00:00Z"})
        == "b: 1\na: '2026-11-27T09:00:00Z'\n"
    )
    assert printing.to_json({"a": [1]}) == '{\n    "a": [\n        1\n    ]\n}'


def test_object_ref_and_api_errors() -> None:
    assert printing.object_ref(kinds.REPLICA, "r") == "replica.aviator.dev/r"
    err = errors.Invalid(
        "ModelDeployment 'x' is invalid",
        causes=(errors.FieldError("spec.replicas.min", "must be >= 0"),),
    )
    assert printing.format_api_error(err, context="f.yaml") == (
        "Error from server (Invalid): f.yaml: ModelDeployment 'x' is invalid\n  spec.replicas.min: must be >= 0"
    )


def test_describe_deployment() -> None:
    obj = {
        **OBJ,
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            **OBJ["metadata"],
            "uid": "u-1",
            "resourceVersion": "42",
            "generation": 2,
            "annotations": {"note": "hi"},
            "ownerReferences": [{"kind": "Blueprint", "name": "bp", "controller": True}],
        },
        "status": {
            **OBJ["status"],
            "observedGeneration": 2,
            "placement": [
                {
                    "replica": "chat-0",
                    "node": "h100-a",
                    "devices": ["gpu-0", "gpu-1"],
                    "engine": "sim",
                }
            ],
            "alternatives": [
                {
                    "request": "gpu",
                    "deviceClass": "gpu.nvidia.com",
                    "driver": "gpu.nvidia.com",
                    "product": "H100",
                    "count": 2,
                    "devices": 8,
                    "free": 6,
                    "replicas": 4,
                    "fitsNow": 3,
                    "engines": ["vllm", "sim"],
                }
            ],
            "capacity": {
                "replicas": 3,
                "attainable": True,
                "message": "3 replica(s) serve 5 req/s",
                "paths": [
                    {
                        "request": "gpu",
                        "driver": "gpu.nvidia.com",
                        "product": "H100",
                        "replicaRps": 1.8333,
                        "replicas": 3,
                    }
                ],
            },
        },
    }
    replica = {
        "metadata": {"name": "chat-0", "creationTimestamp": ts(timedelta(seconds=30))},
        "spec": {"node": "h100-a", "engine": "sim"},
        "status": {
            "phase": "Running",
            "restarts": 1,
            "endpoint": "http://a",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    page = printing.describe(kinds.MODEL_DEPLOYMENT, obj, now=NOW, replicas=[replica]).splitlines()
    assert page[0] == "Name:              chat"
    assert "Labels:            aviator.dev/model-deployment=chat" in page
    assert "Annotations:       note: hi" in page
    assert "Owner:             Blueprint/bp (controller)" in page
    assert f"Created:           {ts(timedelta(minutes=3))} (3m ago)" in page
    assert "Finalizers:        <none>" in page
    assert "Generation:        2 (observed 2)" in page
    assert "Spec:" in page and "  model:" in page and "    name: org/m" in page
    assert "  readyReplicas: 2" in page and not any("conditions" in line for line in page)
    conditions = page.index("Conditions:")
    assert page[conditions + 1].split() == [
        "TYPE",
        "STATUS",
        "REASON",
        "MESSAGE",
        "LAST",
        "TRANSITION",
    ]
    assert page[conditions + 2].split() == ["Available", "True", "R", "2/2", "ready", "5s"]
    assert page[conditions + 3].split() == ["Degraded", "False", "<none>"]
    plan = page.index("Capacity Plan:  3 replica(s); 3 replica(s) serve 5 req/s")
    assert page[plan + 2].split() == ["gpu", "gpu.nvidia.com", "H100", "1.83", "3"]
    paths = page.index("Execution Paths:")
    assert page[paths + 2].split() == [
        "gpu",
        "gpu.nvidia.com",
        "H100",
        "2",
        "8",
        "6",
        "3",
        "vllm,sim",
    ]
    replicas = page.index("Replicas:")
    assert page[replicas + 1].split() == ["NAME", "PHASE", "READY", "RESTARTS", "NODE", "DEVICES", "ENGINE",
                                          "ENDPOINT", "AGE"]  # fmt: skip
    assert page[replicas + 2].split() == ["chat-0", "Running", "True", "1", "h100-a", "gpu-0,gpu-1", "sim",
                                          "http://a", "30s"]  # fmt: skip
    # shown as tables, not repeated as YAML
    assert not any(
        line.strip().startswith(("placement:", "alternatives:", "endpoints:")) for line in page
    )


def test_describe_replica_and_terminating() -> None:
    obj = {
        "metadata": {
            "name": "r",
            "namespace": "default",
            "deletionTimestamp": ts(timedelta(seconds=4)),
            "finalizers": ["aviator.dev/runtime"],
        },
        "spec": {},
        "status": {
            "lastExit": {
                "code": 137,
                "signal": 9,
                "reason": "killed",
                "finishedAt": ts(timedelta(seconds=10)),
            }
        },
    }
    page = printing.describe(
        kinds.REPLICA, obj, now=NOW, log_path="/d/logs/default/r.log", log_exists=True
    )
    lines = page.splitlines()
    assert any(line.startswith("Terminating:") and "(4s ago)" in line for line in lines)
    assert "Finalizers:        aviator.dev/runtime" in lines
    assert "Spec:  <none>" in lines and "Status:  <none>" in lines
    assert "Last Exit:  code 137, signal 9, killed, 10s ago" in lines
    assert "Log:        /d/logs/default/r.log" in lines
    assert "Conditions:  <none>" in lines
    assert "Replicas:" not in page

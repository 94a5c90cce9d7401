"""The resource commands end to end: typer's CliRunner against a real Control API and store."""

from __future__ import annotations

import json
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from aviator.api import kinds
from aviator.api.meta import format_time, now_utc
from aviator.cli import resources

from .conftest import TOKEN, ApiServer, EchoSpy, join_checked, when

MD = kinds.MODEL_DEPLOYMENT
REP = kinds.REPLICA


def md_doc(
    name: str = "chat", *, replicas: int = 1, namespace: str | None = None, **meta: Any
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, **meta}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": metadata,
        "spec": {"model": {"name": f"org/{name}-model"}, "engine": "sim", "replicas": replicas},
    }


def replica_doc(name: str, deployment: str = "chat") -> dict[str, Any]:
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "Replica",
        "metadata": {"name": name, "labels": {"aviator.dev/model-deployment": deployment}},
        "spec": {"model": {"name": f"org/{deployment}-model"}, "engine": "sim"},
    }


def write(path: Path, *docs: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
    return path


def available(generation: int = 1, status: str = "True") -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "readyReplicas": 1,
        "desiredReplicas": 1,
        "endpoints": [{"replica": "chat-0", "url": "http://127.0.0.1:40123"}],
        "conditions": [
            {
                "type": "Available",
                "status": status,
                "reason": "MinimumReplicasAvailable",
                "message": "1/1 replicas ready",
                "lastTransitionTime": format_time(now_utc()),
            }
        ],
    }


# -- apply ---------------------------------------------------------------------------------------


def test_apply_creates_then_is_unchanged_then_configures(api: ApiServer, tmp_path: Path) -> None:
    path = write(tmp_path / "chat.yaml", md_doc())
    first = api.run(["apply", "-f", str(path)])
    assert first.exit_code == 0, first.output
    assert first.stdout == "modeldeployment.aviator.dev/chat created\n"

    again = api.run(["apply", "-f", str(path)])
    assert again.exit_code == 0 and again.stdout == "modeldeployment.aviator.dev/chat unchanged\n"
    assert api.get(MD, "chat")["metadata"]["generation"] == 1

    write(path, md_doc(replicas=3, labels={"team": "ml"}))
    third = api.run(["apply", "-f", str(path)])
    assert third.exit_code == 0 and third.stdout == "modeldeployment.aviator.dev/chat configured\n"
    stored = api.get(MD, "chat")
    assert stored["spec"]["replicas"] == {"min": 3, "max": 3}
    assert stored["metadata"]["labels"] == {"team": "ml"}
    assert stored["metadata"]["generation"] == 2


def test_apply_keeps_finalizers_and_owners_it_was_not_given(api: ApiServer, tmp_path: Path) -> None:
    api.create(MD, md_doc(finalizers=["test.aviator.dev/hold"]))
    path = write(tmp_path / "chat.yaml", md_doc(replicas=2))
    result = api.run(["apply", "-f", str(path)])
    assert result.exit_code == 0 and "configured" in result.stdout
    assert api.get(MD, "chat")["metadata"]["finalizers"] == ["test.aviator.dev/hold"]


def test_apply_round_trips_get_output(api: ApiServer) -> None:
    api.create(MD, md_doc())
    api.set_status(MD, "chat", available())
    exported = api.run(["get", "md", "-o", "yaml"])
    assert exported.exit_code == 0
    result = api.run(["apply", "-f", "-"], input=exported.stdout)
    assert result.exit_code == 0, result.output
    assert result.stdout == "modeldeployment.aviator.dev/chat unchanged\n"


def test_apply_stdin_multi_document_and_namespaces(api: ApiServer) -> None:
    text = yaml.safe_dump_all([md_doc("a", namespace="team"), md_doc("b")]) + "---\n"
    result = api.run(["apply", "-f", "-", "-n", "other"], input=text)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "modeldeployment.aviator.dev/a created",
        "modeldeployment.aviator.dev/b created",
    ]
    assert api.names(MD, "team") == ["a"] and api.names(MD, "other") == ["b"]


def test_apply_directory_in_sorted_order(api: ApiServer, tmp_path: Path) -> None:
    write(tmp_path / "2-b.yml", md_doc("b"))
    write(tmp_path / "1-a.yaml", md_doc("a"))
    (tmp_path / "3-c.json").write_text(json.dumps(md_doc("c")))
    (tmp_path / "notes.txt").write_text("not a manifest")
    result = api.run(["apply", "-f", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert [line.split("/")[1] for line in result.stdout.splitlines()] == [
        "a created",
        "b created",
        "c created",
    ]


def test_apply_invalid_document_prints_causes_and_stores_nothing(
    api: ApiServer, tmp_path: Path
) -> None:
    bad = md_doc("bad")
    bad["spec"]["replicas"] = {"min": -1}
    bad["spec"]["colour"] = "blue"
    path = write(tmp_path / "both.yaml", md_doc("good"), bad)
    result = api.run(["apply", "-f", str(path)])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"error: {path}:") and "(document 2)" in lines[0]
    assert "ModelDeployment 'bad' is invalid" in lines[0]
    assert "  spec.colour: unknown field" in lines
    assert any(line.startswith("  spec.replicas.min: ") for line in lines)
    assert lines[-1] == "error: nothing applied: 1 of 2 object(s) are invalid"
    assert api.names(MD) == []


def test_apply_without_local_validation_reports_server_errors_and_continues(
    api: ApiServer, tmp_path: Path
) -> None:
    bad = md_doc("bad")
    bad["spec"]["engine"] = "warp"
    path = write(tmp_path / "both.yaml", bad, md_doc("good"))
    result = api.run(["apply", "--no-validate", "-f", str(path)])
    assert result.exit_code == 1
    assert result.stdout == "modeldeployment.aviator.dev/good created\n"
    first, *causes = result.stderr.splitlines()
    assert first.startswith("Error from server (Invalid): error when applying ")
    assert any(c.startswith("  spec.engine: ") for c in causes)
    assert api.names(MD) == ["good"]


def test_apply_malformed_yaml_names_the_position_and_applies_nothing(
    api: ApiServer, tmp_path: Path
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(md_doc("a")) + "---\nkind: [unclosed\n")
    result = api.run(["apply", "-f", str(path)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {path}:")
    assert "malformed YAML" in result.stderr
    assert api.names(MD) == []


def test_apply_needs_a_filename(api: ApiServer) -> None:
    assert api.run(["apply"]).exit_code == 2


# -- get -----------------------------------------------------------------------------------------


@pytest.fixture
def two_deployments(api: ApiServer) -> ApiServer:
    api.create(MD, md_doc("chat", labels={"app": "chat"}))
    api.create(MD, md_doc("embed", replicas=2, labels={"app": "embed"}))
    api.set_status(MD, "chat", available())
    api.create(MD, md_doc("other"), namespace="team")
    return api


def test_get_table(two_deployments: ApiServer) -> None:
    result = two_deployments.run(["get", "md"])
    assert result.exit_code == 0, result.output
    header, chat, embed = result.stdout.splitlines()
    assert header.split() == ["NAME", "MODEL", "ENGINE", "READY", "DESIRED", "AVAILABLE", "AGE"]
    assert chat.split()[:6] == ["chat", "org/chat-model", "sim", "1", "1", "True"]
    assert embed.split()[:6] == ["embed", "org/embed-model", "sim", "0", "<none>", "<none>"]
    assert chat.split()[6].endswith("s")
    assert header.index("MODEL") == chat.index("org/chat-model")  # aligned columns


def test_get_wide_all_namespaces_and_selector(two_deployments: ApiServer) -> None:
    wide = two_deployments.run(["get", "modeldeployments", "chat", "-o", "wide"])
    assert wide.exit_code == 0
    header, row = wide.stdout.splitlines()
    assert header.split()[-3:] == ["PRIORITY", "ENDPOINTS", "AGE"]
    assert "standard" in row and "http://127.0.0.1:40123" in row

    everywhere = two_deployments.run(["get", "md", "-A"])
    rows = [line.split()[:2] for line in everywhere.stdout.splitlines()]
    assert rows == [
        ["NAMESPACE", "NAME"],
        ["default", "chat"],
        ["default", "embed"],
        ["team", "other"],
    ]

    selected = two_deployments.run(["get", "md", "-l", "app=embed", "-o", "name"])
    assert selected.stdout == "modeldeployment.aviator.dev/embed\n"


def test_get_yaml_json_name(two_deployments: ApiServer) -> None:
    one = two_deployments.run(["get", "md/chat", "-o", "yaml"])
    obj = yaml.safe_load(one.stdout)
    assert obj["kind"] == "ModelDeployment" and obj["metadata"]["name"] == "chat"
    assert obj["status"]["conditions"][0]["type"] == "Available"

    many = json.loads(two_deployments.run(["get", "md", "-o", "json"]).stdout)
    assert many["kind"] == "List" and [i["metadata"]["name"] for i in many["items"]] == [
        "chat",
        "embed",
    ]

    names = two_deployments.run(["get", "md", "chat", "embed", "-o", "name"])
    assert names.stdout.splitlines() == [
        "modeldeployment.aviator.dev/chat",
        "modeldeployment.aviator.dev/embed",
    ]


def test_get_empty_not_found_and_unknown_kind(api: ApiServer) -> None:
    empty = api.run(["get", "replicas"])
    assert empty.exit_code == 0 and empty.stdout == ""
    assert empty.stderr == "No resources found in default namespace.\n"

    empty_json = api.run(["get", "rep", "-o", "json"])
    assert empty_json.exit_code == 0 and json.loads(empty_json.stdout)["items"] == []

    missing = api.run(["get", "md", "nope"])
    assert missing.exit_code == 1
    assert missing.stderr.startswith("Error from server (NotFound): ") and "nope" in missing.stderr

    unknown = api.run(["get", "pods"])
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("error: unknown resource type 'pods'")
    assert "modeldeployments (md, mds)" in unknown.stderr


def test_get_usage_errors_exit_2(api: ApiServer) -> None:
    assert api.run(["get"]).exit_code == 2
    assert api.run(["get", "md", "-o", "xml"]).exit_code == 2
    assert api.run(["get", "md", "chat", "-A"]).exit_code == 2
    assert api.run(["get", "md/chat", "rep"]).exit_code == 2


def test_get_watch_prints_rows_as_events_arrive(api: ApiServer, echo_spy: EchoSpy) -> None:
    api.create(MD, md_doc("chat"))
    changes = when(lambda: api.watchers() > 0, lambda: api.create(MD, md_doc("late")))
    stopper = when(lambda: echo_spy.seen("late"), ctrl_c)
    result = api.run(["get", "md", "--watch"])
    join_checked(changes)
    join_checked(stopper)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert (
        lines[0].startswith("NAME") and lines[1].startswith("chat") and lines[2].startswith("late")
    )
    assert lines[2].index("org/late-model") == lines[0].index("MODEL")


def ctrl_c() -> None:
    main = threading.main_thread().ident
    assert main is not None
    signal.pthread_kill(main, signal.SIGINT)


# -- describe ------------------------------------------------------------------------------------


def test_describe_deployment_lists_its_replicas(api: ApiServer) -> None:
    api.create(MD, md_doc("chat", labels={"app": "chat"}, annotations={"note": "hello"}))
    api.set_status(MD, "chat", available())
    api.create(REP, replica_doc("chat-0"))
    api.set_status(
        REP,
        "chat-0",
        {
            "phase": "Running",
            "endpoint": "http://127.0.0.1:40123",
            "restarts": 2,
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "ProbeSucceeded", "message": ""}
            ],
        },
    )
    api.create(REP, replica_doc("other-0", deployment="other"))
    result = api.run(["describe", "md", "chat"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("Name:")
    for fragment in (
        "Namespace:",
        "default",
        "Labels:",
        "app=chat",
        "note: hello",
        "Created:",
        "ago)",
        "Spec:",
        "  model:",
        "    name: org/chat-model",
        "Status:",
        "  readyReplicas: 1",
        "Conditions:",
        "MinimumReplicasAvailable",
        "1/1 replicas ready",
        "Replicas:",
        "chat-0",
        "Running",
        "http://127.0.0.1:40123",
    ):
        assert fragment in out, fragment
    replica_row = next(line for line in out.splitlines() if "chat-0" in line and "Running" in line)
    assert replica_row.split()[:4] == ["chat-0", "Running", "True", "2"]
    assert "other-0" not in out


def test_describe_replica_shows_last_exit_and_log(api: ApiServer) -> None:
    api.create(REP, replica_doc("chat-0"))
    api.set_status(
        REP,
        "chat-0",
        {"phase": "Failed", "restarts": 3, "lastExit": {"code": 1, "reason": "engine crashed"}},
    )
    result = api.run(["describe", "rep/chat-0"])
    assert result.exit_code == 0, result.output
    log = api.data_dir / "logs" / "default" / "chat-0.log"
    assert "Last Exit:" in result.stdout and "code 1, engine crashed" in result.stdout
    assert "Log:" in result.stdout and f"{log} (not written yet)" in result.stdout

    missing = api.run(["describe", "rep", "nope"])
    assert missing.exit_code == 1 and "NotFound" in missing.stderr


# -- delete --------------------------------------------------------------------------------------


def _terminating(api: ApiServer, name: str) -> bool:
    return bool(api.get(MD, name)["metadata"].get("deletionTimestamp"))


def _release(api: ApiServer, name: str) -> None:
    obj = api.get(MD, name)
    obj["metadata"]["finalizers"] = []
    api.replace(MD, obj)


def test_delete_waits_until_the_object_is_gone(api: ApiServer) -> None:
    api.create(MD, md_doc("chat", finalizers=["test.aviator.dev/hold"]))
    release = when(lambda: _terminating(api, "chat"), lambda: _release(api, "chat"))
    result = api.run(["delete", "md", "chat", "--timeout", "10s"])
    join_checked(release)
    assert result.exit_code == 0, result.output
    assert result.stdout == 'modeldeployment.aviator.dev "chat" deleted\n'
    assert api.names(MD) == []


def test_delete_times_out_while_a_finalizer_holds(api: ApiServer) -> None:
    api.create(MD, md_doc("chat", finalizers=["test.aviator.dev/hold"]))
    result = api.run(["delete", "md/chat", "--timeout", "300ms"])
    assert result.exit_code == 1
    assert "timed out after 300ms" in result.stderr and "test.aviator.dev/hold" in result.stderr
    no_wait = api.run(["delete", "md/chat", "--no-wait"])
    assert no_wait.exit_code == 0 and "deleted" in no_wait.stdout


def test_delete_from_file_and_not_found(api: ApiServer, tmp_path: Path) -> None:
    api.create(MD, md_doc("a"))
    api.create(MD, md_doc("b"))
    path = write(tmp_path / "ab.yaml", md_doc("a"), md_doc("b"))
    result = api.run(["delete", "-f", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        'modeldeployment.aviator.dev "a" deleted',
        'modeldeployment.aviator.dev "b" deleted',
    ]
    again = api.run(["delete", "-f", str(path)])
    assert again.exit_code == 1 and again.stderr.count("Error from server (NotFound)") == 2
    assert api.run(["delete", "-f", str(path), "--ignore-not-found"]).exit_code == 0
    assert api.run(["delete", "md"]).exit_code == 2


# -- wait ----------------------------------------------------------------------------------------


def test_wait_for_condition_set_by_a_status_write(api: ApiServer) -> None:
    api.create(MD, md_doc("chat"))
    writer = when(lambda: api.watchers() > 0, lambda: api.set_status(MD, "chat", available()))
    result = api.run(["wait", "--for", "condition=Available", "md/chat", "--timeout", "10s"])
    join_checked(writer)
    assert result.exit_code == 0, result.output
    assert result.stdout == "modeldeployment.aviator.dev/chat condition met\n"
    false = api.run(["wait", "--for=condition=available=false", "md", "chat", "--timeout", "0"])
    assert false.exit_code == 1 and "currently Available=True" in false.stderr


def test_wait_ignores_status_of_an_older_generation(api: ApiServer) -> None:
    api.create(MD, md_doc("chat"))
    api.set_status(MD, "chat", available(generation=0))
    result = api.run(["wait", "--for", "condition=Available", "md/chat", "--timeout", "200ms"])
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "error: timed out after 200ms waiting for condition Available=True"
    )
    assert "for generation 0 of 1" in result.stderr


def test_wait_for_delete_and_missing_objects(api: ApiServer) -> None:
    api.create(MD, md_doc("chat"))
    deleter = when(lambda: api.watchers() > 0, lambda: api.delete(MD, "chat"))
    result = api.run(["wait", "--for", "delete", "md/chat", "--timeout", "10s"])
    join_checked(deleter)
    assert result.exit_code == 0 and result.stdout == "modeldeployment.aviator.dev/chat deleted\n"
    gone = api.run(["wait", "--for", "condition=Available", "md/chat", "--timeout", "1s"])
    assert gone.exit_code == 1 and "NotFound" in gone.stderr
    assert api.run(["wait", "--for", "ready", "md/chat"]).exit_code == 2
    assert api.run(["wait", "--for", "delete", "md/chat", "--timeout", "soon"]).exit_code == 2


# -- logs ----------------------------------------------------------------------------------------


def _log(api: ApiServer, name: str, text: str) -> Path:
    path = api.data_dir / "logs" / "default" / f"{name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_logs_reads_the_replica_log(api: ApiServer) -> None:
    _log(api, "chat-0", "one\ntwo\nthree\n")
    result = api.run(["logs", "replica/chat-0"])
    assert result.exit_code == 0 and result.stdout == "one\ntwo\nthree\n"
    tail = api.run(["logs", "rep/chat-0", "--tail", "2"])
    assert tail.stdout == "two\nthree\n"
    bare = api.run(["logs", "chat-0", "--tail", "1"])
    assert bare.stdout == "three\n"
    missing = api.run(["logs", "rep/chat-9"])
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: no log for replica default/chat-9 at ")
    assert api.run(["logs", "pods/x"]).exit_code == 1


def test_logs_of_a_deployment_prefix_each_replica(api: ApiServer) -> None:
    api.create(MD, md_doc("chat"))
    api.create(REP, replica_doc("chat-a"))
    api.create(REP, replica_doc("chat-b"))
    _log(api, "chat-a", "alpha\n")
    _log(api, "chat-b", "beta\n")
    result = api.run(["logs", "md/chat"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "[chat-a] alpha\n[chat-b] beta\n"


def test_logs_follow_until_the_replica_is_deleted(
    api: ApiServer, echo_spy: EchoSpy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resources, "FOLLOW_CHECK_S", 0.1)
    monkeypatch.setattr(resources, "FOLLOW_POLL_S", 0.02)
    api.create(REP, replica_doc("chat-0"))
    path = _log(api, "chat-0", "old line\n")

    def append_then_delete() -> None:
        with path.open("a") as handle:
            handle.write("new line\nunfinished")
        api.delete(REP, "chat-0")

    writer = when(lambda: echo_spy.seen("old line"), append_then_delete)
    result = api.run(["logs", "-f", "rep/chat-0"])
    join_checked(writer)
    assert result.exit_code == 0, result.output
    assert result.stdout == "old line\nnew line\nunfinished\n"


# -- connection problems -------------------------------------------------------------------------


def test_unreachable_api_and_missing_configuration(api: ApiServer, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    result = api.run(["--server", url, "get", "md"])
    assert result.exit_code == 1
    assert (
        result.stderr == f"error: cannot reach the Control API at {url}; is `aviator up` running?\n"
    )
    assert TOKEN not in result.output

    from typer.testing import CliRunner

    empty = CliRunner().invoke(api.app, ["--data-dir", str(tmp_path / "none"), "get", "md"])
    assert empty.exit_code == 1 and "no running plane found" in empty.stderr


def test_logs_follow_a_deployment_picks_up_new_replicas(
    api: ApiServer, echo_spy: EchoSpy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resources, "FOLLOW_CHECK_S", 0.1)
    monkeypatch.setattr(resources, "FOLLOW_POLL_S", 0.02)
    api.create(MD, md_doc("chat"))
    api.create(REP, replica_doc("chat-a"))
    _log(api, "chat-a", "alpha\n")

    def scale_up() -> None:
        api.create(REP, replica_doc("chat-b"))
        _log(api, "chat-b", "beta\n")

    def tear_down() -> None:
        api.delete(MD, "chat")
        with (api.data_dir / "logs" / "default" / "chat-a.log").open("a") as handle:
            handle.write("last words\n")
        api.delete(REP, "chat-a")
        api.delete(REP, "chat-b")

    grow = when(lambda: echo_spy.seen("[chat-a] alpha"), scale_up)
    stop = when(lambda: echo_spy.seen("[chat-b] beta"), tear_down)
    result = api.run(["logs", "md/chat", "--follow"])
    join_checked(grow)
    join_checked(stop)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["[chat-a] alpha", "[chat-b] beta", "[chat-a] last words"]

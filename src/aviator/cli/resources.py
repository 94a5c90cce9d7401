"""The kubectl-habit commands: ``apply``, ``get``, ``describe``, ``delete``, ``wait``, ``logs``.

Each command parses its arguments (usage errors exit 2), then runs one coroutine against the
Control API with ``asyncio.run``. Results go to stdout; errors go to stderr as one line each
(plus the field causes of an ``Invalid``), and the exit code is 0 (ok) or 1 (failed, not found,
timed out, invalid). Tokens are never printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer

from aviator.api import errors, kinds
from aviator.api.kinds import KindInfo
from aviator.api.names import LABEL_DEPLOYMENT
from aviator.cli import manifests, parsing, printing
from aviator.cli.context import CliContext, NotConfigured
from aviator.cli.logfiles import LogReader
from aviator.client import Client, Unavailable

__all__ = ["register"]

T = TypeVar("T")

POLL_INTERVAL_S = 0.5
"""Fallback re-read period of ``wait`` when no watch event arrives."""

DELETE_POLL_MAX_S = 0.5
"""Longest pause between two checks of ``delete --wait`` (it starts at 50 ms and doubles)."""

FOLLOW_POLL_S = 0.2
"""How often ``logs -f`` looks for new bytes."""

FOLLOW_CHECK_S = 1.0
"""How often ``logs -f`` asks the Control API whether the replica (or deployment) still exists."""

REWATCH_PAUSE_S = 0.2
"""Pause before re-opening a watch the server closed, so a restarting server is not hammered."""

OUTPUTS = ("wide", "yaml", "json", "name")

NamespaceOption = typer.Option(
    None,
    "--namespace",
    "-n",
    envvar="AVIATOR_NAMESPACE",
    show_default=False,
    help="Namespace of the objects (default: 'default').",
)
TimeoutOption = typer.Option(
    "60s", "--timeout", help="How long to wait: 90s, 2m, 500ms, 1h or seconds."
)


# -- plumbing ------------------------------------------------------------------------------------


def _err(text: str) -> None:
    typer.echo(text, err=True)


def _fail(text: str, code: int = 1) -> NoReturn:
    _err(text)
    raise typer.Exit(code)


def usage_error(ctx: typer.Context, message: str) -> NoReturn:
    _err(f"error: {message}\nSee '{ctx.command_path} --help' for usage.")
    raise typer.Exit(2)


def _cli(ctx: typer.Context) -> CliContext:
    obj = ctx.obj
    if not isinstance(obj, CliContext):  # pragma: no cover - the root callback always sets it
        raise RuntimeError("the aviator root callback did not set a CliContext")
    return obj


def _now() -> datetime:
    return datetime.now(UTC)


def _parse(ctx: typer.Context, fn: Callable[[], T]) -> T:
    """Run an argument parser: usage problems exit 2, an unknown kind exits 1."""
    try:
        return fn()
    except parsing.UsageError as exc:
        usage_error(ctx, str(exc))
    except errors.NotFound as exc:
        _fail(f"error: {exc.message}")


def run_with_client(
    ctx: typer.Context,
    body: Callable[[Client], Coroutine[Any, Any, int]],
    *,
    interrupt_code: int = 130,
) -> NoReturn:
    """Run ``body`` with a client of the configured Control API and exit with its code."""
    cli = _cli(ctx)
    try:
        url = cli.api_url()
        cli.api_token()
    except NotConfigured as exc:
        _fail(f"error: {exc}")

    async def main() -> int:
        async with cli.client() as client:
            return await body(client)

    try:
        code = asyncio.run(main())
    except Unavailable:
        _fail(f"error: cannot reach the Control API at {url}; is `aviator up` running?")
    except errors.ApiError as exc:
        _fail(printing.format_api_error(exc))
    except KeyboardInterrupt:
        code = interrupt_code
    raise typer.Exit(code)


def namespace_or_default(namespace: str | None) -> str:
    return namespace or "default"


async def _get_or_none(
    client: Client, kind: KindInfo, *, name: str, namespace: str | None
) -> dict[str, Any] | None:
    try:
        return await client.get(kind, name, namespace=namespace)
    except errors.NotFound:
        return None


def _deadline(timeout: float) -> float:
    return asyncio.get_running_loop().time() + timeout


def _remaining(deadline: float) -> float:
    return deadline - asyncio.get_running_loop().time()


# -- apply ---------------------------------------------------------------------------------------


def apply(
    ctx: typer.Context,
    filenames: list[str] = typer.Option(
        ...,
        "--filename",
        "-f",
        show_default=False,
        help="File, directory (*.yaml, *.yml, *.json) or '-' for stdin; repeatable.",
    ),
    namespace: str | None = NamespaceOption,
    validate: bool = typer.Option(
        True,
        "--validate/--no-validate",
        help="Check every document locally first and apply nothing if one is invalid.",
    ),
) -> None:
    """Create or update the objects in manifests (multi-document YAML or JSON).

    Prints `<kind>.aviator.dev/<name> created|configured|unchanged` per object. Every document is
    read (and, by default, validated) before the first object is sent.

    Examples: `aviator apply -f examples/quickstart.yaml`; `aviator apply -f manifests/ -n team`;
    `aviator get md -o yaml | aviator apply -f -`
    """
    try:
        documents = manifests.load(filenames, stdin=sys.stdin)
    except manifests.ManifestError as exc:
        for problem in exc.problems:
            _err(f"error: {problem}")
        raise typer.Exit(1) from None
    default_ns = namespace_or_default(namespace)
    if validate:
        failures = manifests.validate(documents, default_namespace=default_ns)
        if failures:
            for failure in failures:
                _err(failure.line)
            _fail(
                f"error: nothing applied: {len(failures)} of {len(documents)} object(s) are invalid"
            )

    async def body(client: Client) -> int:
        failed = 0
        for doc in documents:
            outcome = await manifests.apply_one(client, doc, default_namespace=default_ns)
            if outcome.ok:
                typer.echo(outcome.line)
            else:
                failed += 1
                _err(outcome.line)
        return 1 if failed else 0

    run_with_client(ctx, body)


# -- get -----------------------------------------------------------------------------------------


def _emit_objects(
    objects: Sequence[dict[str, Any]], *, output: str, single: bool, resource_version: str = ""
) -> None:
    doc: Any = (
        objects[0] if single else printing.as_list(objects, resource_version=resource_version)
    )
    typer.echo(
        printing.to_yaml(doc) if output == "yaml" else printing.to_json(doc), nl=output != "yaml"
    )


def get(
    ctx: typer.Context,
    args: list[str] | None = typer.Argument(
        None,
        metavar="KIND [NAME] | KIND/NAME",
        show_default=False,
        help="Kind (md, modeldeployment, rep, replicas, ...) and optional names.",
    ),
    namespace: str | None = NamespaceOption,
    all_namespaces: bool = typer.Option(
        False, "--all-namespaces", "-A", help="List across all namespaces."
    ),
    output: str | None = typer.Option(
        None, "--output", "-o", help="wide, yaml, json or name.", show_default=False
    ),
    selector: str | None = typer.Option(
        None,
        "--selector",
        "-l",
        help="Label selector, e.g. app=chat,tier!=test.",
        show_default=False,
    ),
    watch: bool = typer.Option(
        False, "--watch", "-w", help="After listing, print changes as they happen."
    ),
) -> None:
    """List objects of a kind, or show named ones.

    Examples: `aviator get md`; `aviator get rep -o wide -A`; `aviator get md/chat -o yaml`;
    `aviator get rep -l aviator.dev/model-deployment=chat -w`
    """
    if output is not None and output not in OUTPUTS:
        usage_error(ctx, f"unknown output format {output!r}; use one of: {', '.join(OUTPUTS)}")
    kinds_, refs = _parse(ctx, lambda: parsing.parse_refs(args or [], names_required=False))
    if refs and all_namespaces:
        usage_error(ctx, "a named object cannot be retrieved across all namespaces (-A); use -n")
    if refs and selector:
        usage_error(ctx, "names and a label selector (-l) cannot be combined")
    if watch and len(kinds_) > 1:
        usage_error(ctx, "--watch works on one kind at a time")
    ns = None if all_namespaces else namespace_or_default(namespace)
    out = output or ""

    async def body(client: Client) -> int:
        if refs:
            return await _get_named(client, refs, namespace=ns, output=out, watch=watch)
        return await _get_list(
            client, kinds_[0], namespace=ns, selector=selector, output=out, watch=watch
        )

    run_with_client(ctx, body, interrupt_code=0)


async def _get_named(
    client: Client,
    refs: Sequence[parsing.ObjectRef],
    *,
    namespace: str | None,
    output: str,
    watch: bool,
) -> int:
    found: list[tuple[KindInfo, dict[str, Any]]] = []
    failed = False
    writer = printing.TableWriter()
    for ref in refs:
        try:
            found.append((ref.kind, await client.get(ref.kind, ref.name, namespace=namespace)))
        except errors.NotFound as exc:
            _err(printing.format_api_error(exc))
            failed = True
    if found:
        if output in ("yaml", "json"):
            _emit_objects([obj for _, obj in found], output=output, single=len(refs) == 1)
        elif output == "name":
            for kind, obj in found:
                typer.echo(printing.object_ref(kind, obj["metadata"]["name"]))
        else:
            groups: list[KindInfo] = []
            for kind, _ in found:
                if kind not in groups:
                    groups.append(kind)
            tables = []
            for kind in groups:
                headers, rows = printing.table(
                    kind, [obj for k, obj in found if k is kind], now=_now(), wide=output == "wide"
                )
                if len(groups) > 1:
                    for row in rows:
                        row[0] = printing.object_ref(kind, row[0])
                    tables.append(printing.render_table(headers, rows))
                else:
                    tables.append("\n".join(writer.render([headers, *rows])))
            typer.echo("\n\n".join(tables))
    if watch and found:
        # From the oldest version read, so no change in between is missed (some may repeat).
        rv = min(
            (str(obj["metadata"].get("resourceVersion", "0")) for _, obj in found), key=_rv_key
        )
        await _watch_rows(
            client,
            refs[0].kind,
            namespace=namespace,
            selector=None,
            resource_version=rv,
            names={ref.name for ref in refs},
            output=output,
            all_namespaces=False,
            printed_header=True,
            writer=writer,
        )
    return 1 if failed else 0


def _rv_key(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0


async def _get_list(
    client: Client,
    kind: KindInfo,
    *,
    namespace: str | None,
    selector: str | None,
    output: str,
    watch: bool,
) -> int:
    items, rv = await client.list(kind, namespace=namespace, selector=selector)
    all_ns = namespace is None and kind.namespaced
    writer = printing.TableWriter()
    if output in ("yaml", "json"):
        if not watch:
            _emit_objects(items, output=output, single=False, resource_version=rv)
        else:
            for obj in items:
                _emit_watch_object(obj, output=output)
    elif not items:
        if not watch:
            where = "" if namespace is None else f" in {namespace} namespace"
            _err(f"No resources found{where}.")
    elif output == "name":
        for obj in items:
            typer.echo(printing.object_ref(kind, obj["metadata"]["name"]))
    else:
        headers, rows = printing.table(
            kind, items, now=_now(), wide=output == "wide", all_namespaces=all_ns
        )
        typer.echo("\n".join(writer.render([headers, *rows])))
    if watch:
        await _watch_rows(
            client,
            kind,
            namespace=namespace,
            selector=selector,
            resource_version=rv,
            names=None,
            output=output,
            all_namespaces=all_ns,
            printed_header=bool(items),
            writer=writer,
        )
    return 0


def _emit_watch_object(obj: dict[str, Any], *, output: str) -> None:
    if output == "yaml":
        typer.echo("---\n" + printing.to_yaml(obj), nl=False)
    else:
        typer.echo(printing.to_json(obj))


async def _watch_rows(
    client: Client,
    kind: KindInfo,
    *,
    namespace: str | None,
    selector: str | None,
    resource_version: str,
    names: set[str] | None,
    output: str,
    all_namespaces: bool,
    printed_header: bool,
    writer: printing.TableWriter | None = None,
) -> None:
    """Print one row (or object) per change until interrupted; relist when the version expired."""
    writer = writer or printing.TableWriter()
    header_done = printed_header
    rv = resource_version

    def emit(obj: dict[str, Any]) -> None:
        nonlocal header_done
        if names is not None and obj.get("metadata", {}).get("name") not in names:
            return
        if output in ("yaml", "json"):
            _emit_watch_object(obj, output=output)
            return
        if output == "name":
            typer.echo(printing.object_ref(kind, obj["metadata"]["name"]))
            return
        headers, rows = printing.table(
            kind, [obj], now=_now(), wide=output == "wide", all_namespaces=all_namespaces
        )
        lines = writer.render([headers, *rows]) if not header_done else writer.render(rows)
        header_done = True
        typer.echo("\n".join(lines))

    while True:
        try:
            async for event in client.watch(
                kind, namespace=namespace, resource_version=rv, selector=selector
            ):
                obj = event["object"]
                rv = str(obj.get("metadata", {}).get("resourceVersion") or rv)
                if event["type"] != "BOOKMARK":
                    emit(obj)
        except errors.Gone:
            items, rv = await client.list(kind, namespace=namespace, selector=selector)
            for obj in items:
                emit(obj)
            continue
        await asyncio.sleep(REWATCH_PAUSE_S)


# -- describe ------------------------------------------------------------------------------------


def describe(
    ctx: typer.Context,
    args: list[str] | None = typer.Argument(
        None,
        metavar="KIND [NAME] | KIND/NAME",
        show_default=False,
        help="Kind and names; without names, every object of the kind in the namespace.",
    ),
    namespace: str | None = NamespaceOption,
) -> None:
    """Show an object in detail: metadata, spec, status, conditions, and related objects.

    Examples: `aviator describe md chat`; `aviator describe rep/chat-5d8f1-0`
    """
    kinds_, refs = _parse(ctx, lambda: parsing.parse_refs(args or [], names_required=False))
    ns = namespace_or_default(namespace)
    cli = _cli(ctx)

    async def body(client: Client) -> int:
        objects: list[tuple[KindInfo, dict[str, Any]]] = []
        failed = False
        if refs:
            for ref in refs:
                try:
                    objects.append((ref.kind, await client.get(ref.kind, ref.name, namespace=ns)))
                except errors.NotFound as exc:
                    _err(printing.format_api_error(exc))
                    failed = True
        else:
            items, _ = await client.list(kinds_[0], namespace=ns)
            if not items:
                _err(f"No resources found in {ns} namespace.")
            objects.extend((kinds_[0], obj) for obj in items)
        pages = [await _describe_page(client, cli, kind=kind, obj=obj) for kind, obj in objects]
        if pages:
            typer.echo("\n\n".join(pages))
        return 1 if failed else 0

    run_with_client(ctx, body)


async def _describe_page(
    client: Client, cli: CliContext, *, kind: KindInfo, obj: dict[str, Any]
) -> str:
    meta = obj.get("metadata", {})
    name, obj_ns = str(meta.get("name", "")), meta.get("namespace")
    replicas: list[dict[str, Any]] | None = None
    log_path: str | None = None
    log_exists = False
    if kind is kinds.MODEL_DEPLOYMENT:
        replicas, _ = await client.list(
            kinds.REPLICA, namespace=obj_ns, selector=f"{LABEL_DEPLOYMENT}={name}"
        )
    elif kind is kinds.REPLICA:
        path = cli.datadir.replica_log(str(obj_ns or "default"), name)
        log_path, log_exists = str(path), await asyncio.to_thread(path.exists)
    return printing.describe(
        kind, obj, now=_now(), replicas=replicas, log_path=log_path, log_exists=log_exists
    )


# -- delete --------------------------------------------------------------------------------------


def delete(
    ctx: typer.Context,
    args: list[str] | None = typer.Argument(
        None, metavar="KIND NAME | KIND/NAME", show_default=False, help="What to delete."
    ),
    filenames: list[str] = typer.Option(
        [], "--filename", "-f", show_default=False, help="Delete every object in these manifests."
    ),
    namespace: str | None = NamespaceOption,
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until the objects are gone."),
    timeout: str = TimeoutOption,
    ignore_not_found: bool = typer.Option(
        False, "--ignore-not-found", help="Treat objects that do not exist as deleted."
    ),
) -> None:
    """Delete objects by name or from manifests, and wait until they are gone.

    Examples: `aviator delete md chat`; `aviator delete -f examples/quickstart.yaml --no-wait`
    """
    seconds = _parse(ctx, lambda: parsing.parse_duration(timeout))
    default_ns = namespace_or_default(namespace)
    targets: list[tuple[KindInfo, str | None, str]] = []
    if args and filenames:
        usage_error(ctx, "give either names or -f files, not both")
    if filenames:
        try:
            docs = manifests.load(filenames, stdin=sys.stdin)
        except manifests.ManifestError as exc:
            for problem in exc.problems:
                _err(f"error: {problem}")
            raise typer.Exit(1) from None
        targets = [(d.kind, manifests.resolve_namespace(d, default_ns), d.name) for d in docs]
    else:
        _, refs = _parse(ctx, lambda: parsing.parse_refs(args or [], names_required=True))
        targets = [(r.kind, default_ns if r.kind.namespaced else None, r.name) for r in refs]

    async def body(client: Client) -> int:
        failed = False
        pending: list[tuple[KindInfo, str | None, str]] = []
        for kind, ns, name in targets:
            try:
                await client.delete(kind, name, namespace=ns)
            except errors.NotFound as exc:
                if not ignore_not_found:
                    _err(printing.format_api_error(exc))
                    failed = True
                continue
            except errors.ApiError as exc:
                _err(printing.format_api_error(exc))
                failed = True
                continue
            typer.echo(f'{kind.singular}.{kind.group} "{name}" deleted')
            pending.append((kind, ns, name))
        if wait and pending:
            deadline = _deadline(seconds)
            for kind, ns, name in pending:
                if not await _wait_gone(client, kind, namespace=ns, name=name, deadline=deadline):
                    obj = await _get_or_none(client, kind, name=name, namespace=ns)
                    finalizers = (
                        ", ".join((obj or {}).get("metadata", {}).get("finalizers") or []) or "none"
                    )
                    _err(
                        f"error: timed out after {timeout} waiting for {printing.object_ref(kind, name)} "
                        f"to be deleted (still terminating; finalizers: {finalizers})"
                    )
                    failed = True
        return 1 if failed else 0

    run_with_client(ctx, body)


async def _wait_gone(
    client: Client, kind: KindInfo, *, namespace: str | None, name: str, deadline: float
) -> bool:
    pause = 0.05
    while True:
        if await _get_or_none(client, kind, name=name, namespace=namespace) is None:
            return True
        remaining = _remaining(deadline)
        if remaining <= 0:
            return False
        await asyncio.sleep(min(pause, remaining))
        pause = min(pause * 2, DELETE_POLL_MAX_S)


# -- wait ----------------------------------------------------------------------------------------


def wait(
    ctx: typer.Context,
    args: list[str] = typer.Argument(..., metavar="KIND/NAME | KIND NAME", show_default=False),
    for_: str = typer.Option(
        ...,
        "--for",
        show_default=False,
        help="`condition=TYPE[=True|False|Unknown]` or `delete`.",
    ),
    namespace: str | None = NamespaceOption,
    timeout: str = TimeoutOption,
) -> None:
    """Wait until objects have a condition, or are deleted.

    Prints `<kind>.aviator.dev/<name> condition met` (or `deleted`); exits 1 on timeout.

    Examples: `aviator wait --for condition=Available md/chat --timeout 2m`;
    `aviator wait --for delete rep/chat-5d8f1-0`
    """
    what = _parse(ctx, lambda: parsing.parse_wait_for(for_))
    seconds = _parse(ctx, lambda: parsing.parse_duration(timeout))
    _, refs = _parse(ctx, lambda: parsing.parse_refs(args, names_required=True))
    ns = namespace_or_default(namespace)

    async def body(client: Client) -> int:
        deadline = _deadline(seconds)
        for ref in refs:
            ref_ns = ns if ref.kind.namespaced else None
            shown = printing.object_ref(ref.kind, ref.name)
            if what.delete:
                obj = await _await_object(
                    client,
                    ref.kind,
                    namespace=ref_ns,
                    name=ref.name,
                    deadline=deadline,
                    done=lambda o: o is None,
                )
                if obj is not None:
                    _err(f"error: timed out after {timeout} waiting for the deletion of {shown}")
                    return 1
                typer.echo(f"{shown} deleted")
                continue
            current = await client.get(ref.kind, ref.name, namespace=ref_ns)  # NotFound: exit 1
            obj = await _await_object(
                client,
                ref.kind,
                namespace=ref_ns,
                name=ref.name,
                deadline=deadline,
                first=current,
                done=lambda o: (
                    o is None
                    or parsing.condition_met(o, condition=what.condition, status=what.status)
                ),
            )
            if obj is None:
                _err(f"error: {shown} was deleted while waiting for {what.describe()}")
                return 1
            if not parsing.condition_met(obj, condition=what.condition, status=what.status):
                _err(
                    f"error: timed out after {timeout} waiting for {what.describe()} on {shown} "
                    f"({_condition_now(obj, what.condition)})"
                )
                return 1
            typer.echo(f"{shown} condition met")
        return 0

    run_with_client(ctx, body)


def _condition_now(obj: dict[str, Any], condition: str) -> str:
    cond = parsing.find_condition(obj, condition)
    if cond is None:
        return f"no {condition} condition yet"
    text = f"currently {cond.get('type')}={cond.get('status')}"
    detail = ": ".join(str(p) for p in (cond.get("reason"), cond.get("message")) if p)
    if not parsing.condition_met(obj, condition=condition, status=str(cond.get("status", ""))):
        observed = cond.get(
            "observedGeneration", (obj.get("status") or {}).get("observedGeneration")
        )
        text += f", for generation {observed} of {obj['metadata'].get('generation')}"
    return f"{text}: {detail}" if detail else text


async def _await_object(
    client: Client,
    kind: KindInfo,
    *,
    namespace: str | None,
    name: str,
    deadline: float,
    done: Callable[[dict[str, Any] | None], bool],
    first: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Re-read the object until ``done(obj)`` (``None`` when it is gone) or the deadline passes.

    A watch wakes the loop as soon as the object changes; every ``POLL_INTERVAL_S`` it re-reads
    anyway, so a broken watch only makes the wait slower, never wrong. Returns the last state.
    """
    obj = (
        first
        if first is not None
        else await _get_or_none(client, kind, name=name, namespace=namespace)
    )
    if done(obj) or _remaining(deadline) <= 0:
        return obj
    wake = asyncio.Event()
    rv = (obj or {}).get("metadata", {}).get("resourceVersion")
    watcher = asyncio.create_task(
        _wake_on_change(
            client, kind, namespace=namespace, name=name, resource_version=rv, wake=wake
        ),
        name=f"wait watch {kind.plural}/{name}",
    )
    try:
        while True:
            remaining = _remaining(deadline)
            if remaining <= 0:
                return obj
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(POLL_INTERVAL_S, remaining)):
                    await wake.wait()
            wake.clear()
            obj = await _get_or_none(client, kind, name=name, namespace=namespace)
            if done(obj):
                return obj
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def _wake_on_change(
    client: Client,
    kind: KindInfo,
    *,
    namespace: str | None,
    name: str,
    resource_version: str | None,
    wake: asyncio.Event,
) -> None:
    # Any failure ends the watch quietly: the caller's poll carries on.
    with contextlib.suppress(errors.AviatorError):
        async for event in client.watch(
            kind, namespace=namespace, resource_version=resource_version
        ):
            if (
                event["type"] != "BOOKMARK"
                and event["object"].get("metadata", {}).get("name") == name
            ):
                wake.set()


# -- logs ----------------------------------------------------------------------------------------


def logs(
    ctx: typer.Context,
    target: str = typer.Argument(
        ...,
        metavar="replica/NAME | modeldeployment/NAME",
        show_default=False,
        help="A replica (rep/NAME, or a bare NAME), or a deployment: then every replica's log, prefixed.",
    ),
    namespace: str | None = NamespaceOption,
    follow: bool = typer.Option(
        False, "--follow", "-f", help="Keep printing new lines until the object is deleted."
    ),
    tail: int = typer.Option(-1, "--tail", help="Lines of the end of the log to show (-1: all)."),
) -> None:
    """Print a replica's log from this machine's data directory.

    Examples: `aviator logs rep/chat-5d8f1-0 --tail 20`; `aviator logs -f md/chat`
    """
    kind_name, sep, name = target.partition("/")
    if not sep:
        kind_name, name = "replica", target
    if not name or "/" in name:
        usage_error(ctx, f"{target!r}: expected replica/NAME, modeldeployment/NAME or NAME")
    kind = _parse(ctx, lambda: kinds.resolve(kind_name))
    if kind not in (kinds.REPLICA, kinds.MODEL_DEPLOYMENT):
        _fail(f"error: logs are kept for replicas and modeldeployments, not {kind.plural}")
    ns = namespace_or_default(namespace)
    cli = _cli(ctx)
    if kind is kinds.REPLICA and not follow:
        path = cli.datadir.replica_log(ns, name)
        try:
            reader = LogReader.open_tail(path, lines=tail)
        except FileNotFoundError:
            _fail(_missing_log(namespace=ns, name=name, path=path))
        _print_all(reader)
        raise typer.Exit(0)

    async def body(client: Client) -> int:
        if kind is kinds.REPLICA:
            return await _follow_replica(client, cli, namespace=ns, name=name, tail=tail)
        return await _deployment_logs(
            client, cli, namespace=ns, name=name, tail=tail, follow=follow
        )

    run_with_client(ctx, body, interrupt_code=0)


async def _follow_replica(
    client: Client, cli: CliContext, *, namespace: str, name: str, tail: int
) -> int:
    path = cli.datadir.replica_log(namespace, name)
    try:
        reader = await asyncio.to_thread(LogReader.open_tail, path, lines=tail)
    except FileNotFoundError:
        _err(_missing_log(namespace=namespace, name=name, path=path))
        return 1

    async def exists() -> bool:
        # A replica object outlives its engine (runtime finalizer), so its last lines are seen.
        return await _get_or_none(client, kinds.REPLICA, name=name, namespace=namespace) is not None

    await _follow({name: reader}, exists=exists, refresh=None)
    return 0


async def _deployment_logs(
    client: Client, cli: CliContext, *, namespace: str, name: str, tail: int, follow: bool
) -> int:
    await client.get(kinds.MODEL_DEPLOYMENT, name, namespace=namespace)  # NotFound: exit 1
    selector = f"{LABEL_DEPLOYMENT}={name}"
    readers = await _replica_readers(
        client, cli, namespace=namespace, selector=selector, tail=tail, known={}
    )
    if not readers:
        _err(
            f"error: no replica of {printing.object_ref(kinds.MODEL_DEPLOYMENT, name)} in namespace "
            f"{namespace} has a log yet"
        )
        return 1
    if not follow:
        for reader in readers.values():
            await asyncio.to_thread(_print_all, reader)
        return 0

    async def refresh(current: dict[str, LogReader]) -> None:
        current.update(
            await _replica_readers(
                client,
                cli,
                namespace=namespace,
                selector=selector,
                tail=-1,
                known=current,
                quiet=True,
            )
        )

    async def exists() -> bool:
        # The deployment goes at once; its replicas stay (and log) until their engines stopped.
        if (
            await _get_or_none(client, kinds.MODEL_DEPLOYMENT, name=name, namespace=namespace)
            is not None
        ):
            return True
        replicas, _ = await client.list(kinds.REPLICA, namespace=namespace, selector=selector)
        return bool(replicas)

    await _follow(readers, exists=exists, refresh=refresh)
    return 0


def _missing_log(*, namespace: str, name: str, path: Path) -> str:
    return (
        f"error: no log for replica {namespace}/{name} at {path}: it has not started yet, or its plane "
        "uses another data directory (--data-dir)"
    )


def _print_all(reader: LogReader) -> None:
    more = True
    while more:
        lines, more = reader.read()
        if lines:
            typer.echo("\n".join(lines))
    for line in reader.flush():
        typer.echo(line)


async def _replica_readers(
    client: Client,
    cli: CliContext,
    *,
    namespace: str,
    selector: str,
    tail: int,
    known: dict[str, LogReader],
    quiet: bool = False,
) -> dict[str, LogReader]:
    """Readers for the selected replicas not in ``known`` that have a log file."""
    replicas, _ = await client.list(kinds.REPLICA, namespace=namespace, selector=selector)
    out: dict[str, LogReader] = {}
    for replica in replicas:
        rname = str(replica["metadata"]["name"])
        if rname in known:
            continue
        path = cli.datadir.replica_log(namespace, rname)
        try:
            out[rname] = await asyncio.to_thread(
                LogReader.open_tail, path, lines=tail, prefix=f"[{rname}] "
            )
        except FileNotFoundError:
            if not quiet:
                _err(f"warning: no log yet for replica {namespace}/{rname} at {path}")
    return out


async def _follow(
    readers: dict[str, LogReader],
    *,
    exists: Callable[[], Awaitable[bool]],
    refresh: Callable[[dict[str, LogReader]], Awaitable[None]] | None,
) -> None:
    """``tail -f`` over ``readers`` until ``exists()`` turns false (then print what is left)."""
    loop = asyncio.get_running_loop()
    next_check = loop.time() + FOLLOW_CHECK_S
    while True:
        for reader in list(readers.values()):
            more = True
            while more:
                lines, more = await asyncio.to_thread(reader.read)
                if lines:
                    typer.echo("\n".join(lines))
        if loop.time() >= next_check:
            if not await exists():
                for reader in readers.values():
                    for line in await asyncio.to_thread(reader.read_all):
                        typer.echo(line)
                return
            if refresh is not None:
                await refresh(readers)
            next_check = loop.time() + FOLLOW_CHECK_S
        await asyncio.sleep(FOLLOW_POLL_S)


# -- registration --------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    """Add apply, get, describe, delete, wait and logs to the ``aviator`` command."""
    app.command("apply")(apply)
    app.command("get")(get)
    app.command("describe")(describe)
    app.command("delete")(delete)
    app.command("wait")(wait)
    app.command("logs")(logs)

"""Manifests: read multi-document YAML/JSON into checked documents, and apply them.

``load`` reads every source before anything is sent, so a typo in the last file of a directory
stops the whole apply instead of leaving it half done. ``apply`` creates or updates each object
(create, and on ``AlreadyExists`` replace carrying the current resourceVersion, retrying on
``Conflict``) and reports ``created``/``configured``/``unchanged`` per object, like kubectl.

Admission (and with it every kind's pydantic model) is imported on the first validation, not with
this module: ``aviator delete -f`` reads manifests without validating them, and ``aviator get``
imports this module with the other commands of ``aviator.cli.resources``.

This module MUST NOT print or exit: it returns results and raises ``ManifestError``; the command
layer decides what goes to stdout and stderr.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import yaml

from aviator.api import errors
from aviator.api.kinds import KINDS, KindInfo
from aviator.cli.printing import format_api_error, object_ref
from aviator.client import Client

__all__ = [
    "MANIFEST_SUFFIXES",
    "ApplyOutcome",
    "ApplyResults",
    "Document",
    "ManifestError",
    "apply",
    "apply_one",
    "desired_object",
    "load",
    "parse_text",
    "resolve_namespace",
    "validate",
]

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
"""What a directory source contributes (non-recursive, sorted by name, like ``kubectl -f DIR``)."""

SERVER_MANAGED_METADATA = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
)
"""Metadata the store owns; stripped from documents so ``get -o yaml | apply -f -`` round-trips."""

KEPT_FROM_CURRENT = ("finalizers", "ownerReferences")
"""Metadata a replace keeps from the stored object when the document does not mention it."""

CONFLICT_RETRIES = 5
"""Replace attempts when another writer changes the object between our get and replace."""

Action = Literal["created", "configured", "unchanged"]


class ManifestError(errors.AviatorError):
    """One or more sources could not be read or are not valid manifests; one problem per line."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class Document:
    """One object read from a manifest, with where it came from."""

    kind: KindInfo
    body: dict[str, Any]
    source: str
    index: int
    """1-based position of the YAML document in its source."""
    line: int = 0
    """1-based line the document starts on (0 when unknown, e.g. JSON)."""
    item: int | None = None
    """1-based position inside a ``kind: List`` document, if it came from one."""

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def namespace(self) -> str | None:
        value = self.body["metadata"].get("namespace")
        return str(value) if value else None

    @property
    def ref(self) -> str:
        return object_ref(self.kind, self.name)

    @property
    def where(self) -> str:
        return _where(self.source, index=self.index, line=self.line, item=self.item)


def _where(source: str, *, index: int, line: int, item: int | None) -> str:
    loc = f"{source}:{line}" if line else source
    inner = f"document {index}" + (f", item {item}" if item is not None else "")
    return f"{loc} ({inner})"


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as text: the API wants strings, not ``datetime``."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _yaml_documents(text: str, *, source: str) -> Iterator[tuple[int, Any]]:
    """(start line, data) for every non-empty document; ``ManifestError`` with file:line:column."""
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # pragma: no cover - check_node guarantees a node
                continue
            yield node.start_mark.line + 1, loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise ManifestError([f"{source}:{_describe_yaml_error(exc)}"]) from None
    except yaml.YAMLError as exc:
        raise ManifestError([f"{source}: malformed YAML: {exc}"]) from None
    finally:
        loader.dispose()


def _describe_yaml_error(exc: yaml.MarkedYAMLError) -> str:
    """``LINE:COLUMN: malformed YAML: problem (context started at line L, column C)``."""
    mark = exc.problem_mark or exc.context_mark
    text = f"{mark.line + 1}:{mark.column + 1}: " if mark is not None else " "
    text += f"malformed YAML: {exc.problem or exc.context or 'cannot parse'}"
    ctx = exc.context_mark
    if exc.problem and exc.context and ctx is not None:
        text += f" ({exc.context} started at line {ctx.line + 1}, column {ctx.column + 1})"
    return text


def _check(data: Any, *, source: str, index: int, line: int, item: int | None) -> Document:
    where = _where(source, index=index, line=line, item=item)
    if not isinstance(data, dict):
        raise ManifestError(
            [
                f"{where}: expected a mapping with apiVersion, kind and metadata, got {type(data).__name__}"
            ]
        )
    missing = [key for key in ("apiVersion", "kind") if not data.get(key)]
    metadata = data.get("metadata")
    if not isinstance(metadata, dict) or not metadata.get("name"):
        missing.append("metadata.name")
    if missing:
        raise ManifestError([f"{where}: missing {', '.join(missing)}"])
    kind_name = data["kind"]
    info = KINDS.get(kind_name) if isinstance(kind_name, str) else None
    if info is None:
        known = ", ".join(sorted(KINDS))
        raise ManifestError([f"{where}: unknown kind {kind_name!r}; known kinds: {known}"])
    if data["apiVersion"] != info.api_version:
        raise ManifestError(
            [
                f"{where}: {info.kind} is served as apiVersion {info.api_version}, not {data['apiVersion']!r}"
            ]
        )
    return Document(kind=info, body=data, source=source, index=index, line=line, item=item)


def _documents_of(data: Any, *, source: str, index: int, line: int) -> list[Document]:
    if isinstance(data, dict) and data.get("kind") == "List" and data.get("apiVersion") == "v1":
        items = data.get("items")
        if not isinstance(items, list):
            raise ManifestError(
                [
                    f"{_where(source, index=index, line=line, item=None)}: a List needs an `items` list"
                ]
            )
        return [
            _check(entry, source=source, index=index, line=line, item=i)
            for i, entry in enumerate(items, start=1)
        ]
    return [_check(data, source=source, index=index, line=line, item=None)]


def parse_text(text: str, *, source: str, is_json: bool = False) -> list[Document]:
    """Every object in ``text`` (multi-document YAML, or one JSON value); empty documents are skipped.

    Collects the problems of every document before raising, so one run shows them all.
    """
    if is_json:
        try:
            raw: list[tuple[int, Any]] = [(0, json.loads(text))] if text.strip() else []
        except json.JSONDecodeError as exc:
            raise ManifestError(
                [f"{source}:{exc.lineno}:{exc.colno}: malformed JSON: {exc.msg}"]
            ) from None
    else:
        raw = list(_yaml_documents(text, source=source))
    docs: list[Document] = []
    problems: list[str] = []
    for index, (line, data) in enumerate(raw, start=1):
        if data is None:
            continue
        try:
            docs.extend(_documents_of(data, source=source, index=index, line=line))
        except ManifestError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ManifestError(problems)
    return docs


def _files_of(path: Path) -> list[Path]:
    if not path.exists():
        raise ManifestError([f"the path {str(path)!r} does not exist"])
    if path.is_dir():
        found = sorted(
            p for p in path.iterdir() if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES
        )
        if not found:
            raise ManifestError(
                [
                    f"no manifests ({', '.join('*' + s for s in MANIFEST_SUFFIXES)}) in directory {path}"
                ]
            )
        return found
    return [path]


def load(sources: Sequence[Path | str], *, stdin: TextIO | None = None) -> list[Document]:
    """Read and check every document of every source (``-`` is stdin, a directory its manifests).

    Raises ``ManifestError`` listing every problem found; returns nothing partial.
    """
    docs: list[Document] = []
    problems: list[str] = []
    used_stdin = False
    for source in sources:
        try:
            if str(source) == "-":
                if used_stdin:
                    raise ManifestError(["stdin ('-') can be given only once"])
                used_stdin = True
                if stdin is None:
                    raise ManifestError(["no stdin to read manifests from"])
                docs.extend(parse_text(stdin.read(), source="<stdin>"))
                continue
            for path in _files_of(Path(source)):
                try:
                    text = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise ManifestError([f"cannot read {path}: {exc}"]) from None
                docs.extend(
                    parse_text(text, source=str(path), is_json=path.suffix.lower() == ".json")
                )
        except ManifestError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ManifestError(problems)
    if not docs:
        raise ManifestError(
            [f"no objects found in {', '.join(str(s) for s in sources) or 'no sources'}"]
        )
    return docs


def resolve_namespace(doc: Document, default_namespace: str) -> str | None:
    """The document's own namespace, else the command's; ``None`` for cluster-scoped kinds."""
    if not doc.kind.namespaced:
        return None
    return doc.namespace or default_namespace


def _admit(body: dict[str, Any], *, kind: KindInfo, namespace: str | None) -> dict[str, Any]:
    """``admission.admit``, imported on first use (it imports the models and pydantic)."""
    from aviator.api import admission

    return admission.admit(body, kind=kind, namespace=namespace)


def desired_object(doc: Document, namespace: str | None) -> dict[str, Any]:
    """The body to send: a copy without status and store-owned metadata, in ``namespace``."""
    body = copy.deepcopy(doc.body)
    body.pop("status", None)
    meta = body["metadata"]
    for key in SERVER_MANAGED_METADATA:
        meta.pop(key, None)
    if namespace is not None:
        meta["namespace"] = namespace
    return body


@dataclass(frozen=True, slots=True)
class ApplyOutcome:
    document: Document
    action: Action | None = None
    error: str | None = None
    """The error text (possibly several lines: message, then field causes) when it failed."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def line(self) -> str:
        return f"{self.document.ref} {self.action}" if self.error is None else self.error


@dataclass(slots=True)
class ApplyResults:
    outcomes: list[ApplyOutcome] = field(default_factory=list)
    applied_nothing: bool = False
    """True when local validation refused a document, so no object was sent."""

    @property
    def lines(self) -> list[str]:
        """One entry per object, in document order: ``<ref> created`` or the error text."""
        return [o.line for o in self.outcomes]

    @property
    def failed(self) -> int:
        return sum(1 for o in self.outcomes if not o.ok)


def _unchanged(
    desired: dict[str, Any], current: dict[str, Any], *, user_meta: dict[str, Any]
) -> bool:
    if desired.get("spec") != current.get("spec"):
        return False
    want, have = desired.get("metadata", {}), current.get("metadata", {})
    for key in ("labels", "annotations"):
        if (want.get(key) or {}) != (have.get(key) or {}):
            return False
    return all(
        (want.get(key) or []) == (have.get(key) or [])
        for key in KEPT_FROM_CURRENT
        if key in user_meta
    )


async def apply_one(client: Client, doc: Document, *, default_namespace: str) -> ApplyOutcome:
    """Create or update one object; API errors become a failed outcome (``Unavailable`` propagates).

    Create first; if the name exists, read the current object and replace it with the document
    carrying the current resourceVersion (and the finalizers/ownerReferences the document does not
    mention). A write race (``Conflict``, or the object vanishing in between) starts over.
    """
    namespace = resolve_namespace(doc, default_namespace)
    body = desired_object(doc, namespace)
    try:
        normalized: dict[str, Any] | None = _admit(body, kind=doc.kind, namespace=namespace)
    except errors.ApiError:
        normalized = None  # let the server say what is wrong (local validation was switched off)
    try:
        for _ in range(CONFLICT_RETRIES):
            try:
                await client.create(doc.kind, body, namespace=namespace)
                return ApplyOutcome(doc, action="created")
            except errors.AlreadyExists:
                pass
            try:
                current = await client.get(doc.kind, doc.name, namespace=namespace)
            except errors.NotFound:
                continue  # deleted since our create: create again
            current_meta = current.get("metadata", {})
            if current_meta.get("deletionTimestamp"):
                return ApplyOutcome(
                    doc,
                    error=(
                        f"error: {doc.ref} ({doc.where}) is being deleted; wait until it is gone "
                        f"(aviator wait --for delete {doc.kind.singular}/{doc.name}) and apply again"
                    ),
                )
            if normalized is not None and _unchanged(
                normalized, current, user_meta=doc.body["metadata"]
            ):
                return ApplyOutcome(doc, action="unchanged")
            update = copy.deepcopy(body)
            meta = update["metadata"]
            meta["resourceVersion"] = current_meta.get("resourceVersion")
            for key in KEPT_FROM_CURRENT:
                if key not in meta and key in current_meta:
                    meta[key] = current_meta[key]
            try:
                await client.replace(doc.kind, update, namespace=namespace)
                return ApplyOutcome(doc, action="configured")
            except (errors.Conflict, errors.NotFound):
                continue
        raise errors.Conflict(
            f"{doc.ref} kept changing while it was being applied ({CONFLICT_RETRIES} attempts); try again"
        )
    except errors.ApiError as exc:
        return ApplyOutcome(
            doc, error=format_api_error(exc, context=f"error when applying {doc.where}")
        )


def validate(documents: Sequence[Document], *, default_namespace: str) -> list[ApplyOutcome]:
    """Run admission locally on every document; the failures, each naming its document."""
    failures: list[ApplyOutcome] = []
    for doc in documents:
        namespace = resolve_namespace(doc, default_namespace)
        try:
            _admit(desired_object(doc, namespace), kind=doc.kind, namespace=namespace)
        except errors.ApiError as exc:
            failures.append(ApplyOutcome(doc, error=f"error: {doc.where}: {exc}"))
    return failures


async def apply(
    client: Client,
    documents: Sequence[Document],
    *,
    default_namespace: str = "default",
    validate_first: bool = True,
) -> ApplyResults:
    """Apply ``documents`` in order.

    With ``validate_first`` (the default) every document is admitted locally first (the same pure
    admission the server runs); if any is invalid, nothing is sent and only the failures are
    returned. Otherwise each object is applied and a failure does not stop the ones after it.
    """
    if validate_first:
        failures = validate(documents, default_namespace=default_namespace)
        if failures:
            return ApplyResults(outcomes=failures, applied_nothing=True)
    results = ApplyResults()
    for doc in documents:
        results.outcomes.append(await apply_one(client, doc, default_namespace=default_namespace))
    return results

"""Render the API reference (docs/api.md) from the models, so the docs cannot drift from the code.

``python -m aviator.api.reference > docs/api.md``; a test fails when the committed file differs.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from aviator.api.kinds import KINDS, KindInfo


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [a for a in args if a is not type(None)]
        return " \\| ".join(_type_name(a) for a in parts)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"map of {_type_name(args[1])}" if args else "map"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    if annotation is type(None):
        return "null"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "**required**"
    if info.default_factory is not None:
        try:
            value = info.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return ""
        if isinstance(value, BaseModel):
            return "defaults"
        return f"`{value!r}`" if value not in ([], {}) else ""
    if info.default is PydanticUndefined or info.default is None:
        return ""
    return f"`{info.default!r}`"


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in get_args(annotation) for m in _nested_models(a)]


def _describe(model: type[BaseModel]) -> str:
    doc = (model.__doc__ or "").strip()
    if doc.startswith(("Usage docs", "A base class")):
        return ""
    return doc.split("\n\n")[0].replace("\n", " ")


def _field_doc(model: type[BaseModel], name: str, info: FieldInfo) -> str:
    if info.description:
        return info.description.replace("\n", " ")
    # attribute docstrings (`x: int = 0` followed by a string) are read by pydantic when enabled;
    # fall back to empty rather than guessing.
    return ""


def _render_model(model: type[BaseModel], out: list[str], seen: set[type[BaseModel]]) -> None:
    if model in seen:
        return
    seen.add(model)
    out.append(f"### {model.__name__}")
    out.append("")
    if desc := _describe(model):
        out += [desc, ""]
    out.append("| field | type | default | description |")
    out.append("|---|---|---|---|")
    nested: list[type[BaseModel]] = []
    for name, info in model.model_fields.items():
        if name in ("api_version", "kind"):
            continue
        alias = info.alias or name
        out.append(
            f"| `{alias}` | {_type_name(info.annotation)} | {_default(info)} | {_field_doc(model, name, info)} |"
        )
        nested += _nested_models(info.annotation)
    out.append("")
    for sub in nested:
        _render_model(sub, out, seen)


def render() -> str:
    out = [
        "# API reference",
        "",
        "Generated from the models by `python -m aviator.api.reference`; do not edit by hand.",
        "",
        "Every object has `apiVersion: aviator.dev/v1alpha1`, `kind`, [`metadata`](#objectmeta),",
        "`spec` and `status`. Field names are camelCase on the wire. Unknown fields are refused.",
        "",
    ]
    seen: set[type[BaseModel]] = set()
    info: KindInfo
    for info in KINDS.values():
        scope = "namespaced" if info.namespaced else "cluster-scoped"
        out += [
            f"## {info.kind}",
            "",
            f"{scope}; plural `{info.plural}`; short names {', '.join(f'`{s}`' for s in info.short_names)}; "
            f"path `/apis/{info.api_version}/"
            + ("namespaces/{namespace}/" if info.namespaced else "")
            + f"{info.plural}`.",
            "",
        ]
        spec_t = info.model.model_fields["spec"].annotation
        status_t = info.model.model_fields["status"].annotation
        for model in (*_nested_models(spec_t), *_nested_models(status_t)):
            _render_model(model, out, seen)
    out.append("## Common types")
    out.append("")
    from aviator.api.meta import Condition, ObjectMeta

    for model in (ObjectMeta, Condition):
        _render_model(model, out, seen)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")

"""The envelopes document no field with an attribute docstring.

``Resource`` turns pydantic's reading of attribute docstrings off (it costs every process that
imports the kinds a search of the source per class); a docstring written under a field of the
envelope or of a kind class would be silently dropped from the schemas and CRDs. The spec and
status models keep theirs.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import textwrap

import pytest
from pydantic import BaseModel

from aviator.api import kinds
from aviator.api.modeldeployment import ModelDeploymentSpec
from aviator.api.resource import Resource


def attribute_docstrings(cls: type[BaseModel]) -> list[str]:
    """The fields of ``cls`` (its own class body) followed by a string, as pydantic reads them."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = next(node for node in tree.body if isinstance(node, ast.ClassDef)).body
    return [
        target.target.id
        for target, following in itertools.pairwise(body)
        if isinstance(target, ast.AnnAssign)
        and isinstance(target.target, ast.Name)
        and isinstance(following, ast.Expr)
        and isinstance(following.value, ast.Constant)
        and isinstance(following.value.value, str)
    ]


@pytest.mark.parametrize(
    "cls", [Resource, *(info.model for info in kinds.KINDS.values())], ids=lambda c: c.__name__
)
def test_the_envelope_and_the_kinds_have_no_attribute_docstrings(cls: type[BaseModel]) -> None:
    assert attribute_docstrings(cls) == []


def test_the_spec_models_keep_theirs() -> None:
    documented = attribute_docstrings(ModelDeploymentSpec)
    assert documented
    fields = ModelDeploymentSpec.model_fields
    assert all(fields[name].description for name in documented)

"""The merge-patch diff: applying it (RFC 7386) turns the stored object into the desired one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from aviator.kube.patch import merge_patch


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, section 2, written out independently of the code under test."""
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


scalars = st.one_of(st.booleans(), st.integers(), st.text(max_size=5))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from("abcde"), inner, max_size=4),
    ),
    max_leaves=12,
)
objects = st.dictionaries(st.sampled_from("abcdef"), values, max_size=5)


@given(objects, objects)
def test_applying_the_patch_gives_the_desired_object(
    current: dict[str, Any], desired: dict[str, Any]
) -> None:
    assert apply_merge_patch(current, merge_patch(current, desired)) == desired


@given(objects)
def test_an_unchanged_object_needs_no_patch(obj: dict[str, Any]) -> None:
    assert merge_patch(obj, obj) == {}


def test_removed_keys_are_nulls_and_lists_are_replaced_whole() -> None:
    current = {"spec": {"a": 1, "b": [1, 2], "c": {"d": 1}}, "keep": 1}
    desired = {"spec": {"a": 1, "b": [2]}, "keep": 1}
    assert merge_patch(current, desired) == {"spec": {"b": [2], "c": None}}

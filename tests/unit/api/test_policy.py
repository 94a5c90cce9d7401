import pytest

from aviator.api import admission, errors, kinds
from aviator.api.policy import MAX_CEDAR_BYTES


def admit(cedar: str) -> dict[str, object]:
    return admission.admit(
        {"metadata": {"name": "baseline"}, "spec": {"cedar": cedar, "description": "d"}},
        kind=kinds.POLICY,
        namespace=None,
    )


def test_policy_is_cluster_scoped_and_keeps_its_text() -> None:
    text = "permit (principal, action, resource);"
    assert admit(text)["spec"] == {"cedar": text, "description": "d"}
    assert not kinds.POLICY.namespaced
    assert kinds.resolve("pol") is kinds.POLICY


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_text_is_refused(text: str) -> None:
    with pytest.raises(errors.Invalid) as info:
        admit(text)
    assert [c.field for c in info.value.causes] == ["spec.cedar"]


def test_text_is_bounded_in_bytes() -> None:
    admit("//" + "x" * (MAX_CEDAR_BYTES - 3) + "\n")
    with pytest.raises(errors.Invalid) as info:
        admit("//" + "é" * (MAX_CEDAR_BYTES // 2))
    assert "at most 65536 bytes" in info.value.causes[0].message

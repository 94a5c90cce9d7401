import pytest
from hypothesis import given
from hypothesis import strategies as st

from aviator.api import errors, labels


@pytest.mark.parametrize(
    ("selector", "matching", "not_matching"),
    [
        ("app=chat", {"app": "chat"}, {"app": "other"}),
        ("app==chat", {"app": "chat", "x": "y"}, {}),
        ("app!=chat", {}, {"app": "chat"}),
        ("tier in (a, b)", {"tier": "b"}, {"tier": "c"}),
        ("tier notin (a,b)", {"tier": "c"}, {"tier": "a"}),
        ("app", {"app": ""}, {"other": "x"}),
        ("!app", {"other": "x"}, {"app": "x"}),
        (
            "app=chat,tier in (a,b),!legacy",
            {"app": "chat", "tier": "a"},
            {"app": "chat", "tier": "a", "legacy": "1"},
        ),
        ("aviator.dev/model-deployment=chat", {"aviator.dev/model-deployment": "chat"}, {}),
    ],
)
def test_selector_semantics(
    selector: str, matching: dict[str, str], not_matching: dict[str, str]
) -> None:
    parsed = labels.parse(selector)
    assert parsed.matches(matching)
    assert not parsed.matches(not_matching)


@pytest.mark.parametrize("selector", ["a=b=c", "a in b", "!a in (b)", "=x", "a (b)"])
def test_malformed_selectors_are_bad_requests(selector: str) -> None:
    with pytest.raises(errors.BadRequest, match="invalid label selector clause"):
        labels.parse(selector)


def test_empty_selector_matches_everything() -> None:
    assert labels.parse(None).matches({}) and labels.parse("  ").empty


keys = st.sampled_from(["app", "tier", "aviator.dev/x"])
values = st.sampled_from(["a", "b", "c"])


@given(st.dictionaries(keys, values), st.dictionaries(keys, values))
def test_match_labels_is_equality_on_every_key(
    required: dict[str, str], present: dict[str, str]
) -> None:
    expected = all(present.get(k) == v for k, v in required.items())
    assert labels.from_match_labels(required).matches(present) is expected

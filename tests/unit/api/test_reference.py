from pathlib import Path

from aviator.api import reference

DOC = Path(__file__).parents[3] / "docs" / "api.md"


def test_committed_api_reference_matches_the_models() -> None:
    assert DOC.read_text() == reference.render(), (
        "docs/api.md is stale: run `python -m aviator.api.reference > docs/api.md`"
    )


def test_reference_covers_every_spec_field() -> None:
    text = reference.render()
    for field in (
        "`engineArgs`",
        "`maxNumSeqs`",
        "`readyReplicas`",
        "`templateHash`",
        "`lastExit`",
        "`ownerReferences`",
    ):
        assert field in text

import pytest

from aviator.api import errors, kinds


@pytest.mark.parametrize(
    "name", ["md", "MD", "modeldeployment", "modeldeployments", "ModelDeployment", "mds"]
)
def test_resolve_model_deployment_by_any_name(name: str) -> None:
    assert kinds.resolve(name) is kinds.MODEL_DEPLOYMENT


def test_resolve_replica_short_names() -> None:
    assert kinds.resolve("rep") is kinds.REPLICA
    assert kinds.by_plural("replicas") is kinds.REPLICA


def test_unknown_kind_lists_known_ones() -> None:
    with pytest.raises(errors.NotFound, match="modeldeployments"):
        kinds.resolve("pods")

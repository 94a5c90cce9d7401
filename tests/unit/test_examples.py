"""Every example a user is told to apply is valid as shipped."""

from pathlib import Path

import pytest
import yaml

from aviator.api import admission, kinds

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_documents_are_admitted(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents
    for doc in documents:
        info = kinds.resolve(doc["kind"])
        namespace = doc["metadata"].get("namespace", "default") if info.namespaced else None
        admission.admit(doc, kind=info, namespace=namespace)


def test_the_mixed_inventory_spans_vendors_and_regions() -> None:
    docs = list(yaml.safe_load_all((EXAMPLES[0].parent / "inventory-mixed.yaml").read_text()))
    drivers = {d["driver"] for node in docs for d in node["spec"]["devices"]}
    regions = {node["spec"]["region"] for node in docs}
    assert drivers == {"gpu.nvidia.com", "gpu.amd.com", "gaudi.intel.com", "dra.cpu"}
    assert len(regions) == 2

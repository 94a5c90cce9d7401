"""``aviator portability`` on a mixed fleet: lock-in is flagged, the HHI follows the allocations."""

from __future__ import annotations

import orjson
import pytest
from tests.integration.plane import PlaneProcess, claiming_deployment, wait_until

NVIDIA, AMD = "gpu.nvidia.com", "gpu.amd.com"


md = claiming_deployment


def placed(plane: PlaneProcess, expected: dict[str, int]) -> bool:
    """Every expected replica holds its devices and each deployment reported its paths (read
    through the API: a poll through the CLI would start an interpreter every round)."""
    replicas = plane.items("replicas")
    for name, count in expected.items():
        mine = [
            r for r in replicas if r["metadata"]["labels"]["aviator.dev/model-deployment"] == name
        ]
        if len(mine) != count or not all(r["spec"].get("devices") for r in mine):
            return False
        status = plane.get("modeldeployments", name)["status"]
        if status.get("observedGeneration") != 1 or not status.get("alternatives"):
            return False
    return True


def test_single_vendor_deployments_are_flagged_and_the_hhi_follows_the_allocations(
    fleet: PlaneProcess,
) -> None:
    locked = {"deviceClassName": NVIDIA}
    portable = {"firstAvailable": [{"deviceClassName": AMD}, {"deviceClassName": NVIDIA}]}
    docs = "\n---\n".join([md("locked", locked, replicas=2), md("portable", portable, replicas=1)])
    fleet.apply(docs)
    wait_until(
        lambda: placed(fleet, {"locked": 2, "portable": 1}),
        timeout=60,
        interval=0.1,
        message="replicas placed and paths reported",
    )

    # Both forms of the report at once (each command spends seconds starting its interpreter).
    as_json, table = fleet.cli_concurrently(("portability", "-o", "json"), ("portability",))
    assert as_json.returncode == 0, as_json.stderr
    report = orjson.loads(as_json.stdout)
    rows = {d["name"]: d for d in report["deployments"]}
    assert rows["locked"]["flags"] == ["single-path"]
    assert rows["locked"]["vendors"] == ["NVIDIA"]
    assert rows["locked"]["drivers"] == [NVIDIA]
    assert rows["locked"]["paths"] == 2  # H100 and L40S: two products, one vendor
    assert rows["portable"]["paths"] == 3  # MI300X, then H100 and L40S
    assert rows["portable"]["flags"] == []
    assert rows["portable"]["vendors"] == ["AMD", "NVIDIA"]
    assert rows["portable"]["drivers"] == [AMD, NVIDIA]
    assert "vllm" in rows["portable"]["engines"]
    assert rows["locked"]["runsOn"] == ["NVIDIA"]
    assert rows["portable"]["runsOn"] == ["AMD"]

    # The fleet index, from the devices the replicas actually hold (each vendor one driver here).
    held: dict[tuple[str, str], str] = {}
    for r in fleet.items("replicas"):
        for device in r["spec"]["devices"]:
            held[r["spec"]["node"], device["device"]] = device["driver"]
    by_driver = {d: list(held.values()).count(d) for d in set(held.values())}
    assert by_driver == {NVIDIA: 2, AMD: 1}
    total = sum(by_driver.values())
    expected = sum((100 * n / total) ** 2 for n in by_driver.values())
    fleet_doc = report["fleet"]
    assert fleet_doc["allocatedDevices"] == total
    assert fleet_doc["hhi"] == pytest.approx(expected)  # 66.7² + 33.3² = 5,556
    assert fleet_doc["concentration"] == "highly concentrated"
    assert {v["vendor"]: v["devices"] for v in fleet_doc["byVendor"]} == {"NVIDIA": 2, "AMD": 1}

    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "PATHS", "VENDORS", "ENGINES", "RUNS-ON", "FLAGS"]
    cells = {line.split()[0]: line.split() for line in lines[1:3]}
    assert cells["locked"][1:3] == ["2", "NVIDIA"]
    assert cells["locked"][-2:] == ["NVIDIA", "single-path"]
    assert cells["portable"][2] == "AMD,NVIDIA" and cells["portable"][-2:] == ["AMD", "<none>"]
    assert lines[3] == ""
    assert lines[4] == (
        "allocated devices by vendor (namespace default): NVIDIA 2 (66.7%), AMD 1 (33.3%); 3 in all"
    )
    assert lines[5] == f"vendor concentration (HHI): {round(expected):,} — highly concentrated"

"""Placement on a mixed fleet: claims land on what fits, sovereignty holds, the impossible waits."""

from __future__ import annotations

from typing import Any

from tests.integration.plane import INVENTORY, PlaneProcess, claiming_deployment, wait_until

AT_LEAST_80GI = "device.capacity['{d}'].memory.compareTo(quantity('80Gi')) >= 0"


md = claiming_deployment


def replicas_of(plane: PlaneProcess, name: str) -> list[dict[str, Any]]:
    return owned_by(plane.items("replicas"), name)


def owned_by(replicas: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in replicas if r["metadata"]["labels"]["aviator.dev/model-deployment"] == name]


def status_of(plane: PlaneProcess, name: str) -> dict[str, Any]:
    return plane.get("modeldeployments", name)["status"]  # type: ignore[no-any-return]


def test_claims_land_on_what_fits_and_keep_their_devices_across_a_restart(
    fleet: PlaneProcess,
) -> None:
    big = {
        "firstAvailable": [
            {
                "deviceClassName": "gpu.nvidia.com",
                "count": 2,
                "selectors": [AT_LEAST_80GI.format(d="gpu.nvidia.com")],
            },
            {
                "deviceClassName": "gpu.amd.com",
                "selectors": [AT_LEAST_80GI.format(d="gpu.amd.com")],
            },
        ],
        "constraints": [{"matchAttribute": "resource.kubernetes.io/pcieRoot"}],
    }
    sovereign = {"firstAvailable": [
        {"deviceClassName": "gpu.nvidia.com"},
        {"deviceClassName": "gpu.amd.com"},
        {"deviceClassName": "gaudi.intel.com"},
    ]}  # fmt: skip
    impossible = {"deviceClassName": "gpu.nvidia.com", "selectors": [
        "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('1Ti')) >= 0"
    ]}  # fmt: skip
    docs = "\n---\n".join([
        md("big", big, replicas=5),
        md("sovereign", sovereign, sovereignty={"excludedDrivers": ["gpu.nvidia.com"]}),
        md("impossible", impossible),
    ])  # fmt: skip
    fleet.apply(docs)
    # Through the API, not `aviator wait` (each command is an interpreter start of seconds).
    for name in ("big", "sovereign"):
        fleet.wait_for_condition("modeldeployments", name, "Available", timeout=60)

    # >= 80 GiB per device: the H100 node takes four replicas of two devices sharing a PCIe root,
    # the fifth goes to the next alternative (MI300X). Never an L40S (48 GiB).
    big_status = status_of(fleet, "big")
    placement = {p["replica"]: p for p in big_status["placement"]}
    assert len(placement) == 5
    nodes = sorted(p["node"] for p in placement.values())
    assert nodes == ["h100-a"] * 4 + ["mi300x-a"]
    devices = [d for p in placement.values() for d in p["devices"] if p["node"] == "h100-a"]
    assert len(devices) == len(set(devices)) == 8
    paths = {(p["driver"], p["product"]) for p in big_status["alternatives"]}
    assert paths == {
        ("gpu.nvidia.com", "NVIDIA H100 80GB HBM3"),
        ("gpu.amd.com", "AMD Instinct MI300X"),
    }

    # Sovereignty: with NVIDIA excluded it lands on AMD or Gaudi.
    [sov] = status_of(fleet, "sovereign")["placement"]
    assert sov["node"] in ("mi300x-a", "gaudi3-a")

    # The impossible claim waits, Pending, saying which constraint excluded how many devices.
    replicas = fleet.items("replicas")
    [waiting] = owned_by(replicas, "impossible")
    assert waiting["status"]["phase"] == "Pending"
    cond = next(c for c in waiting["status"]["conditions"] if c["type"] == "Scheduled")
    assert cond["status"] == "False"
    assert "0/28 devices available" in cond["message"]
    assert "12 not matching selector" in cond["message"]
    md_cond = next(
        c for c in status_of(fleet, "impossible")["conditions"] if c["type"] == "Scheduled"
    )
    assert md_cond["status"] == "False"

    # A simulated replica placed on an H100 answers with that device's profile.
    big_replicas = owned_by(replicas, "big")
    h100_replica = next(r for r in big_replicas if r["spec"]["node"] == "h100-a")
    assert h100_replica["spec"]["engine"] == "sim"
    assert h100_replica["spec"]["simulator"]["itlMs"] < 40

    # A restart keeps every allocation: same nodes, same devices, nothing given twice.
    before = {
        r["metadata"]["name"]: (r["spec"]["node"], [d["device"] for d in r["spec"]["devices"]])
        for r in big_replicas
    }
    assert fleet.stop() == 0
    fleet.start("--no-gateway", "--inventory", INVENTORY)
    fleet.wait_for_condition("modeldeployments", "big", "Available", timeout=60)
    after = {
        r["metadata"]["name"]: (r["spec"]["node"], [d["device"] for d in r["spec"]["devices"]])
        for r in replicas_of(fleet, "big")
    }
    assert after == before
    wait_until(
        lambda: replicas_of(fleet, "impossible")[0]["status"]["phase"] == "Pending", timeout=10
    )

"""Trusted issuers on the real plane: ``aviator up --identity-config`` with a Kubernetes-style
issuer whose RS256 keys are in a JWKS file. Its tokens count as an agent's at the gateway and at
the Control API, in the configured trust domain; a token naming no Agent gets 401; a new key in
the file is picked up by both processes; a bad file starts nothing.

One plane for the module: ``aviator up --identity-config identity.yaml --apply quickstart.yaml``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from tests.integration.plane import REPO, PlaneProcess

from aviator.audit.log import AuditReader

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
K8S = "https://kubernetes.default.svc.cluster.local"
GROUP = "/apis/aviator.dev/v1alpha1"
IDENTITY = f"""
trustDomain: example.org
trustedIssuers:
  - issuer: {K8S}
    jwks: k8s-jwks.json              # next to this file
    audience: aviator
    subjectClaim: sub
    subjectTemplate: "system:serviceaccount:{{namespace}}:{{name}}"
    algorithms: [RS256]
"""


@dataclass
class Cluster:
    """The external issuer: its signing keys and the JWKS file the plane was told to trust."""

    jwks_file: Path
    keys: dict[str, rsa.RSAPrivateKey]

    def add_key(self, kid: str) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        doc = {
            "keys": [
                {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": k, "use": "sig"}
                for k, key in self.keys.items()
            ]
        }
        tmp = self.jwks_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.jwks_file)  # atomically, as kubelet and config tools write

    def token(self, name: str, *, kid: str = "sa-1", namespace: str = "default") -> str:
        """A projected service-account token for ``namespace/name``."""
        now = int(time.time())
        claims = {
            "iss": K8S,
            "sub": f"system:serviceaccount:{namespace}:{name}",
            "aud": ["aviator"],
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name}},
        }
        return jwt.encode(claims, self.keys[kid], algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trusted-issuer")


@pytest.fixture(scope="module")
def cluster(root: Path) -> Cluster:
    made = Cluster(jwks_file=root / "config" / "k8s-jwks.json", keys={})
    made.jwks_file.parent.mkdir()
    made.add_key("sa-1")
    return made


@pytest.fixture(scope="module")
def plane(root: Path, cluster: Cluster) -> Iterator[PlaneProcess]:
    config = cluster.jwks_file.parent / "identity.yaml"
    config.write_text(IDENTITY)
    handle = PlaneProcess(data_dir=root / "aviator")
    handle.start(
        "--identity-config", str(config), "--apply", str(REPO / "examples" / "quickstart.yaml")
    )
    try:
        handle.wait_for_output("aviator is up.", timeout=45)
        yield handle
    finally:
        handle.cleanup()


def chat(plane: PlaneProcess, token: str) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 4}
    return httpx.post(
        f"{plane.gateway_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30.0,
    )


def control_api_get(plane: PlaneProcess, token: str) -> httpx.Response:
    return httpx.get(
        f"{plane.api_url}{GROUP}/namespaces/default/modeldeployments",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10.0,
    )


def test_a_service_account_token_of_an_agent_is_accepted_by_both(
    plane: PlaneProcess, cluster: Cluster
) -> None:
    token = cluster.token("assistant")
    served = chat(plane, token)
    assert served.status_code == 200, served.text
    listed = control_api_get(plane, token)
    assert listed.status_code == 200, listed.text
    assert [md["metadata"]["name"] for md in listed.json()["items"]] == ["chat"]
    # The plane's own tokens are in the configured trust domain, and the gateway agrees.
    own = plane.agent_token("assistant")
    assert jwt.decode(own, options={"verify_signature": False})["sub"] == (
        "spiffe://example.org/ns/default/agent/assistant"
    )
    assert chat(plane, own).status_code == 200
    # Policy and the audit trail see one agent, whichever issuer vouched for it.
    deadline = time.monotonic() + 10
    while True:
        records = [
            orjson.loads(e.record) for e in AuditReader(plane.data_dir / "audit.db").iterate()
        ]
        allowed = [r for r in records if r["source"] == "gateway" and r["decision"] == "allow"]
        if len(allowed) >= 2:
            break
        assert time.monotonic() < deadline, f"gateway records missing: {records}"
        time.sleep(0.1)
    assert {r["principal"] for r in allowed} == {"spiffe://example.org/ns/default/agent/assistant"}
    for record in records:
        assert token not in json.dumps(record) and own not in json.dumps(record)


def test_a_service_account_of_no_agent_gets_401_from_both(
    plane: PlaneProcess, cluster: Cluster
) -> None:
    token = cluster.token("ghost")
    refused = chat(plane, token)
    assert refused.status_code == 401, refused.text
    assert 'error_description="unknown_agent"' in refused.headers["www-authenticate"]
    assert token not in refused.text
    refused = control_api_get(plane, token)
    assert refused.status_code == 401, refused.text
    assert 'error_description="unknown_agent"' in refused.headers["www-authenticate"]
    # The right agent in another namespace is no agent either.
    assert chat(plane, cluster.token("assistant", namespace="team-a")).status_code == 401


def test_a_key_added_to_the_jwks_file_is_trusted_without_a_restart(
    plane: PlaneProcess, cluster: Cluster
) -> None:
    cluster.add_key("sa-2")
    token = cluster.token("assistant", kid="sa-2")
    deadline = time.monotonic() + 10  # each process polls the file every second
    while (chat(plane, token).status_code, control_api_get(plane, token).status_code) != (200, 200):
        assert time.monotonic() < deadline, "the new key was not picked up"
        time.sleep(0.1)


def test_a_bad_identity_config_starts_nothing(tmp_path: Path) -> None:
    config = tmp_path / "identity.yaml"
    config.write_text(
        f"trustedIssuers:\n  - issuer: {K8S}\n    jwks: k8s.json\n    algorithms: [HS256]\n"
        '    subjectTemplate: "system:serviceaccount:{namespace}:{name}"\n'
    )
    data_dir = tmp_path / "aviator"
    argv = [sys.executable, "-m", "aviator", "--data-dir", str(data_dir), "up", "--no-gateway"]
    result = subprocess.run(
        [*argv, "--api-port", "0", "--identity-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"error: {config}: trustedIssuers[0].audience: required",
        f"{config}: trustedIssuers[0].algorithms[0]: 'HS256' is not accepted (expected one of "
        "ES256, RS256; none and HS* never are)",
    ]
    assert not data_dir.exists()

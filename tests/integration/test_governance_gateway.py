"""Governance at the gateway on the real plane: agent tokens, policy, grants (and their revocation
while a token is reused), budgets, and the audit trail the gateway leaves.

One plane for the module: ``aviator up --apply examples/quickstart.yaml --apply <agents>``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from tests.integration.plane import REPO, PlaneProcess

from aviator.audit.log import AuditReader
from aviator.identity import tokens
from aviator.identity.keys import KeyRing
from aviator.settings import IdentitySettings

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
GROUP = "/apis/aviator.dev/v1alpha1"
EXTRA = """
apiVersion: aviator.dev/v1alpha1
kind: Agent
metadata: {name: intruder, namespace: default}
spec: {owner: mallory@example.com, purpose: has no policy}
---
apiVersion: aviator.dev/v1alpha1
kind: Agent
metadata: {name: reader, namespace: default}
spec:
  owner: rita@example.com
  purpose: works on grants only
  audiences: [gateway, control-api]
---
apiVersion: aviator.dev/v1alpha1
kind: Policy
metadata: {name: reader-asks}
spec:
  cedar: |
    @approval("auto")
    permit (principal == Agent::"default/reader", action == Action::"requestGrant",
            resource is Grant) when { resource.agent == principal };
---
apiVersion: aviator.dev/v1alpha1
kind: Agent
metadata: {name: thrifty, namespace: default}
spec:
  owner: tom@example.com
  purpose: a small budget
  budgets: {tokensPerMinute: 100}
---
apiVersion: aviator.dev/v1alpha1
kind: Policy
metadata: {name: thrifty-chat}
spec:
  cedar: |
    permit (principal == Agent::"default/thrifty", action == Action::"infer",
            resource == ModelDeployment::"default/chat");
"""


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlaneProcess]:
    root = tmp_path_factory.mktemp("governance-gateway")
    extra = root / "agents.yaml"
    extra.write_text(EXTRA)
    handle = PlaneProcess(data_dir=root / "aviator")
    handle.start("--apply", str(REPO / "examples" / "quickstart.yaml"), "--apply", str(extra))
    try:
        handle.wait_for_output("aviator is up.", timeout=45)
        yield handle
    finally:
        handle.cleanup()


def chat(
    plane: PlaneProcess,
    token: str | None,
    *,
    max_tokens: int = 8,
    content: str = "Hello there!",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
    body["max_tokens"] = max_tokens
    return httpx.post(
        f"{plane.gateway_url}/v1/chat/completions", json=body, headers=sent, timeout=30.0
    )


def mint(plane: PlaneProcess, *, audience: str = "gateway", now: float | None = None) -> str:
    """A token of the quickstart agent signed with the plane's own key (as only the plane can)."""
    identity = IdentitySettings()
    ring = KeyRing.load_or_create(plane.data_dir / "keys")
    return tokens.mint(
        key=ring.active,
        issuer=identity.effective_issuer,
        trust_domain=identity.trust_domain,
        namespace="default",
        name="assistant",
        audience=audience,
        ttl_s=300,
        now=time.time() if now is None else now,
    ).token


def control_api(
    plane: PlaneProcess, method: str, path: str, body: Any = None, *, token: str = ""
) -> httpx.Response:
    return httpx.request(
        method,
        f"{plane.api_url}{path}",
        json=body,
        headers={"Authorization": f"Bearer {token or plane.admin_token}"},
        timeout=10.0,
    )


def test_the_quickstart_agent_token_works_and_bad_tokens_get_401(plane: PlaneProcess) -> None:
    printed = plane.output()
    assert "export AGENT_TOKEN=" in printed
    ok = chat(plane, plane.agent_token("assistant"))
    assert ok.status_code == 200, ok.text
    cases = {
        None: None,
        mint(plane, now=time.time() - 3600): "expired",
        mint(plane, audience="control-api"): "wrong_audience",
    }
    for token, reason in cases.items():
        refused = chat(plane, token)
        assert refused.status_code == 401, refused.text
        challenge = refused.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="aviator"')
        if reason is not None:
            assert f'error_description="{reason}"' in challenge
            assert token is not None and token not in refused.text


def test_an_agent_without_a_policy_is_denied(plane: PlaneProcess) -> None:
    denied = chat(plane, plane.agent_token("intruder"))
    assert denied.status_code == 403
    error = denied.json()["error"]
    assert (error["type"], error["code"]) == ("permission_error", "policy_denied")


def test_a_token_reused_after_its_grant_was_revoked_is_refused(plane: PlaneProcess) -> None:
    token = plane.agent_token("reader")
    intent = {"x-aviator-intent": "reader-chat"}
    assert chat(plane, token, headers=intent).status_code == 403  # no grant yet
    # The agent asks for the grant itself (approved at once by its policy)...
    created = control_api(
        plane,
        "POST",
        f"{GROUP}/namespaces/default/grants",
        {
            "apiVersion": "aviator.dev/v1alpha1",
            "kind": "Grant",
            "metadata": {"name": "reader-chat", "namespace": "default"},
            "spec": {
                "agent": "reader",
                "actions": ["infer"],
                "resources": ["md/chat"],
                "purpose": "integration test",
                "durationSeconds": 600,
            },
        },
        token=plane.agent_token("reader", audience="control-api"),
    )
    assert created.status_code == 201, created.text
    assert created.json()["status"]["phase"] == "Active"
    deadline = time.monotonic() + 5
    while (status := chat(plane, token, headers=intent).status_code) != 200:
        assert status == 403 and time.monotonic() < deadline, "the gateway never saw the grant"
        time.sleep(0.05)
    # ... and the administrator takes it back.
    revoked = control_api(
        plane, "POST", f"{GROUP}/namespaces/default/grants/reader-chat/revoke", {}
    )
    assert revoked.status_code == 200, revoked.text
    started = time.monotonic()
    while (refused := chat(plane, token, headers=intent)).status_code == 200:
        assert time.monotonic() - started < 1.0, "still served a second after the revoke"
        time.sleep(0.02)
    assert refused.status_code == 403
    assert "not active" in refused.json()["error"]["message"]
    assert chat(plane, token).status_code == 403  # and no standing policy lets it in


def test_an_agent_over_its_budget_gets_429(plane: PlaneProcess) -> None:
    token = plane.agent_token("thrifty")
    assert chat(plane, token, max_tokens=5, content="x" * 40).status_code == 200
    # 40 characters (10 tokens) + 89 = 99 estimated: over 100 with the first request's usage.
    over = chat(plane, token, max_tokens=89, content="x" * 40)
    assert over.status_code == 429, over.text
    assert over.json()["error"]["code"] == "budget_exceeded"
    assert over.json()["error"]["param"] == "tokensPerMinute"
    assert 1 <= int(over.headers["retry-after"]) <= 60


def test_the_audit_log_holds_the_gateways_decisions_and_verifies(plane: PlaneProcess) -> None:
    assert chat(plane, plane.agent_token("intruder")).status_code == 403
    deadline = time.monotonic() + 10
    while True:
        records = [
            orjson.loads(e.record) for e in AuditReader(plane.data_dir / "audit.db").iterate()
        ]
        gateway = [r for r in records if r["source"] == "gateway"]
        kinds = {(r["decision"], r["extra"].get("status")) for r in gateway}
        if {("allow", 200), ("deny", 403), ("deny", 429)} <= kinds:
            break
        assert time.monotonic() < deadline, f"gateway records missing: {sorted(kinds)}"
        time.sleep(0.1)
    allowed = next(r for r in gateway if r["decision"] == "allow" and r["tokens"])
    assert allowed["principal_kind"] == "agent" and allowed["action"] == "infer"
    assert allowed["resource"] == 'ModelDeployment::"default/chat"'
    assert allowed["tokens"]["prompt"] > 0
    verified = plane.cli("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_files_of_the_data_dir(plane: PlaneProcess) -> None:
    assert not (plane.data_dir / "gateway.token").exists()
    assert Path(plane.data_dir / "audit.db").exists()

"""Identity configuration files: what a good file sets, and the precise refusal of each mistake."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePath
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from aviator.identity.config import (
    IdentityConfig,
    IdentityConfigError,
    jwks_url_problem,
    parse,
    trust_domain_problem,
)
from aviator.identity.jwk import JwkSet
from aviator.identity.keys import KeyRing
from aviator.identity.sources import JwksError, JwksUrl, TrustedIssuers
from aviator.identity.verify import TokenVerifier, plane_issuer, trusted_issuer
from aviator.settings import IdentitySettings, TrustedIssuerSettings

ORIGIN = "identity.yaml"
K8S = "https://kubernetes.default.svc.cluster.local"

GOOD = """
trustDomain: example.org          # optional
trustedIssuers:
  - issuer: https://kubernetes.default.svc.cluster.local
    jwks: /var/run/k8s-jwks.json   # a file (re-read on change) or https:// URL
    audience: aviator
    subjectClaim: sub
    subjectTemplate: "system:serviceaccount:{namespace}:{name}"
    algorithms: [RS256, ES256]
    refreshSeconds: 300
  - issuer: https://idp.example.com
    jwks: https://idp.example.com/keys
    audience: aviator
    subjectClaim: azp
    namespace: agents
    algorithms: [RS256]
"""


def problems(text: str, *, base_dir: PurePath | None = None) -> list[str]:
    with pytest.raises(IdentityConfigError) as caught:
        parse(text, origin=ORIGIN, base_dir=base_dir)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return list(caught.value.problems)


def issuer_doc(**fields: Any) -> str:
    """A one-issuer file (JSON, which is YAML too): a valid issuer with ``fields`` changed
    (``None`` removes a field)."""
    entry: dict[str, Any] = {
        "issuer": K8S,
        "jwks": "/var/run/k8s-jwks.json",
        "audience": "aviator",
        "subjectTemplate": "system:serviceaccount:{namespace}:{name}",
    }
    entry.update(fields)
    return json.dumps({"trustedIssuers": [{k: v for k, v in entry.items() if v is not None}]})


def test_the_documented_example_is_read_field_by_field() -> None:
    config = parse(GOOD, origin=ORIGIN)
    assert config.trust_domain == "example.org"
    assert config.trusted_issuers == (
        TrustedIssuerSettings(
            issuer=K8S,
            jwks="/var/run/k8s-jwks.json",
            audience="aviator",
            subject_claim="sub",
            subject_template="system:serviceaccount:{namespace}:{name}",
            algorithms=("RS256", "ES256"),
            refresh_s=300.0,
        ),
        TrustedIssuerSettings(
            issuer="https://idp.example.com",
            jwks="https://idp.example.com/keys",
            audience="aviator",
            subject_claim="azp",
            subject_template="{name}",
            namespace="agents",
            algorithms=("RS256",),
        ),
    )
    settings = config.apply(IdentitySettings(leeway_s=10))
    assert settings.trust_domain == "example.org"
    assert settings.effective_issuer == "spiffe://example.org"
    assert settings.leeway_s == 10  # what the file does not name is left alone
    assert settings.trusted_issuers == config.trusted_issuers


def test_the_same_file_as_json_reads_the_same() -> None:
    assert parse(json.dumps(yaml.safe_load(GOOD)), origin="i.json") == parse(GOOD, origin=ORIGIN)


async def test_what_it_reads_is_what_the_verifier_and_the_key_sources_accept(
    tmp_path: Path,
) -> None:
    config = parse(GOOD, origin=ORIGIN)
    settings = config.apply(IdentitySettings())
    trusted = TrustedIssuers(settings.trusted_issuers)  # builds every Issuer and source
    try:
        ring = KeyRing.load_or_create(tmp_path / "keys")
        verifier = TokenVerifier(
            issuers=[plane_issuer(settings, keys=ring, audience="gateway"), *trusted.issuers],
            trust_domain=settings.trust_domain,
        )
        assert verifier.issuers == ("spiffe://example.org", K8S, "https://idp.example.com")
    finally:
        await trusted.aclose()


@pytest.mark.parametrize("text", ["", "# nothing\n", "{}", "trustedIssuers: []"])
def test_an_empty_file_is_an_error_and_an_empty_list_is_not(text: str) -> None:
    if text.strip() in ("{}", "trustedIssuers: []"):
        assert parse(text, origin=ORIGIN) == IdentityConfig()
        assert IdentityConfig().apply(IdentitySettings()) == IdentitySettings()
    else:
        assert problems(text) == [
            f"{ORIGIN}: expected a mapping with trustDomain and trustedIssuers, got null"
        ]


def test_a_relative_jwks_path_is_the_files_neighbour() -> None:
    text = issuer_doc(jwks="keys/k8s.json")
    (config,) = parse(text, origin=ORIGIN, base_dir=PurePath("/etc/aviator")).trusted_issuers
    assert config.jwks == "/etc/aviator/keys/k8s.json"
    (config,) = parse(text, origin=ORIGIN).trusted_issuers
    assert config.jwks == "keys/k8s.json"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"audience": None}, "trustedIssuers[0].audience: required"),
        ({"issuer": None}, "trustedIssuers[0].issuer: required"),
        ({"jwks": None}, "trustedIssuers[0].jwks: required"),
        ({"audience": ""}, "trustedIssuers[0].audience: must not be empty"),
        ({"audience": True}, "trustedIssuers[0].audience: expected a string, got bool"),
        ({"audience": " aviator"}, "trustedIssuers[0].audience: ' aviator' has leading or"),
        ({"issuer": 42}, "trustedIssuers[0].issuer: expected a string, got int"),
        ({"audiences": ["a"]}, "trustedIssuers[0].audiences: unknown field (expected one of"),
        (
            {"jwks": "http://idp.example.com/keys"},
            "trustedIssuers[0].jwks: 'http://idp.example.com/keys': plain http is allowed only "
            "to a loopback address",
        ),
        ({"jwks": "ftp://idp/keys"}, "trustedIssuers[0].jwks: 'ftp://idp/keys': expected a JWKS"),
        ({"jwks": "https:///keys"}, "trustedIssuers[0].jwks: 'https:///keys' must be an https://"),
        ({"algorithms": "RS256"}, "trustedIssuers[0].algorithms: expected a list of algorithms"),
        ({"algorithms": []}, "trustedIssuers[0].algorithms: must name at least one of ES256"),
        ({"algorithms": ["RS256", "HS256"]}, "trustedIssuers[0].algorithms[1]: 'HS256' is not"),
        ({"algorithms": ["none"]}, "trustedIssuers[0].algorithms[0]: 'none' is not accepted"),
        ({"algorithms": ["ES384"]}, "trustedIssuers[0].algorithms[0]: 'ES384' is not accepted"),
        ({"algorithms": ["ES256", "ES256"]}, "trustedIssuers[0].algorithms[1]: ES256 is listed"),
        ({"refreshSeconds": 0}, "trustedIssuers[0].refreshSeconds: 0 is out of range"),
        ({"refreshSeconds": 86401}, "trustedIssuers[0].refreshSeconds: 86401 is out of range"),
        ({"refreshSeconds": "5m"}, "trustedIssuers[0].refreshSeconds: expected a number of sec"),
        ({"refreshSeconds": True}, "trustedIssuers[0].refreshSeconds: expected a number of sec"),
        ({"subjectClaim": ""}, "trustedIssuers[0].subjectClaim: must not be empty"),
        (
            {"subjectTemplate": "{name}"},
            "trustedIssuers[0].namespace: required: the subjectTemplate '{name}' has no "
            "{namespace}",
        ),
        ({"subjectTemplate": None}, "trustedIssuers[0].namespace: required: the subjectTemplate"),
        ({"namespace": "team-a"}, "trustedIssuers[0].namespace: not allowed: the subjectTemplate"),
        (
            {"subjectTemplate": "{name}", "namespace": "Team_A"},
            "trustedIssuers[0].namespace: 'Team_A': a DNS-1123 label must",
        ),
        (
            {"subjectTemplate": "sa:{namespace}"},
            "trustedIssuers[0].subjectTemplate: subject template 'sa:{namespace}' must hold "
            "{name} once",
        ),
        (
            {"issuer": "spiffe://aviator.local"},
            "trustedIssuers[0].issuer: 'spiffe://aviator.local' is the plane's own issuer",
        ),
    ],
)
def test_each_mistake_names_its_field(fields: dict[str, Any], expected: str) -> None:
    found = problems(issuer_doc(**fields))
    assert len(found) == 1, found
    assert found[0].startswith(f"{ORIGIN}: {expected}"), found[0]


def test_every_problem_is_reported_at_once() -> None:
    text = """
trustDomain: Example.org
extra: 1
trustedIssuers:
  - issuer: https://idp.example.com
    jwks: keys.json
  - 3
  - {issuer: https://idp.example.com, jwks: a.json, audience: b, namespace: a}
  - {issuer: https://idp.example.com, jwks: a.json, audience: b, namespace: a}
"""
    assert problems(text) == [
        f"{ORIGIN}: extra: unknown field (expected one of trustDomain, trustedIssuers)",
        f"{ORIGIN}: trustDomain: 'Example.org' is not a SPIFFE trust domain name (lowercase "
        "letters, digits, '.', '-' and '_' only, e.g. example.org)",
        f"{ORIGIN}: trustedIssuers[0].audience: required",
        f"{ORIGIN}: trustedIssuers[0].namespace: required: the subjectTemplate '{{name}}' has no "
        "{namespace}, so the agents' namespace must be given",
        f"{ORIGIN}: trustedIssuers[1]: expected a mapping with issuer, jwks and audience, got int",
        f"{ORIGIN}: trustedIssuers[3].issuer: 'https://idp.example.com' is configured twice "
        "(also trustedIssuers[2])",
    ]


def test_the_plane_issuer_follows_the_files_trust_domain() -> None:
    text = json.dumps(
        {
            "trustDomain": "example.org",
            "trustedIssuers": [
                {"issuer": "spiffe://aviator.local", "jwks": "a", "audience": "b", "namespace": "a"}
            ],
        }
    )
    config = parse(text, origin=ORIGIN)  # the default domain's issuer is no longer the plane's
    assert config.trusted_issuers[0].issuer == "spiffe://aviator.local"
    assert "is the plane's own issuer" in problems(text.replace("aviator.local", "example.org"))[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("trustedIssuers: [", f"{ORIGIN}:1:18: malformed YAML: expected the node content"),
        ("trustDomain: a\ntrustDomain: b\n", f"{ORIGIN}:2:1: malformed YAML: key 'trustDomain'"),
        ("trustDomain: a\n---\ntrustDomain: b\n", f"{ORIGIN}: expected one YAML document, got 2"),
        ("[1, 2]", f"{ORIGIN}: expected a mapping with trustDomain and trustedIssuers, got list"),
        ("trustedIssuers: {a: 1}", f"{ORIGIN}: trustedIssuers: expected a list, got dict"),
        ("trustDomain: 7", f"{ORIGIN}: trustDomain: expected a string, got int"),
        ('{"trustDomain": "\\ud800"}', f"{ORIGIN}: trustDomain: '\\ud800' is not valid Unicode"),
        ("!!python/object:os.system {}", f"{ORIGIN}:1:1: malformed YAML: could not determine"),
    ],
)
def test_the_document_itself(text: str, expected: str) -> None:
    found = problems(text)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_a_duplicate_key_inside_an_issuer_is_refused() -> None:
    text = "trustedIssuers:\n  - issuer: a\n    audience: x\n    audience: y\n"
    assert problems(text) == [f"{ORIGIN}:4:5: malformed YAML: key 'audience' appears twice"]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("example.org", True),
        ("prod_1.example-corp.io", True),
        ("aviator.local", True),
        ("", False),
        ("Example.org", False),
        ("example.org/ns", False),
        ("spiffe://example.org", False),
        ("a" * 256, False),
    ],
)
def test_trust_domain_names(value: str, ok: bool) -> None:
    assert (trust_domain_problem(value) is None) is ok


_URL_HOSTS = st.sampled_from(
    ["idp.example.com", "127.0.0.1", "127.8.9.10", "localhost", "[::1]", "10.0.0.1", "[::2]", ""]
)


@settings(max_examples=60, deadline=None)
@given(
    scheme=st.sampled_from(["https", "http", "ftp", "file", "HTTPS"]),
    host=_URL_HOSTS,
    port=st.sampled_from(["", ":8081", ":99999"]),
    path=st.sampled_from(["/jwks", "/.well-known/jwks.json", ""]),
)
async def test_the_url_rule_is_the_key_sources_rule(
    scheme: str, host: str, port: str, path: str
) -> None:
    url = f"{scheme}://{host}{port}{path}"
    try:
        source = JwksUrl(url)
    except (JwksError, ValueError):
        accepted = False
    else:
        accepted = True
        await source.aclose()
    assert (jwks_url_problem(url) is None) is accepted, url


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_ISSUER_KEYS = st.sampled_from(
    ["issuer", "jwks", "audience", "subjectClaim", "subjectTemplate", "namespace", "algorithms"]
)


@settings(max_examples=100, deadline=None)
@given(
    issuers=st.lists(st.dictionaries(_ISSUER_KEYS, _JSONISH, max_size=8), max_size=3),
    domain=_JSONISH,
)
def test_any_document_is_read_or_refused_with_problems(
    issuers: list[dict[str, Any]], domain: Any
) -> None:
    text = json.dumps({"trustDomain": domain, "trustedIssuers": issuers})
    refused: tuple[str, ...] = ()
    try:
        config = parse(text, origin=ORIGIN)
    except IdentityConfigError as exc:
        refused = exc.problems
    if refused:
        assert all(p.startswith(f"{ORIGIN}: ") for p in refused)
        return
    # Whatever is read is something the verifier takes as it is.
    settings = config.apply(IdentitySettings())
    none = JwkSet(())
    TokenVerifier(
        issuers=[
            plane_issuer(settings, keys=none, audience="gateway"),
            *(trusted_issuer(issuer, keys=none) for issuer in settings.trusted_issuers),
        ],
        trust_domain=settings.trust_domain,
    )


def _docs_section() -> str:
    text = (Path(__file__).parents[3] / "docs" / "governance.md").read_text()
    start = text.index("### Trusted issuers")
    return text[start : text.index("\n## ", start)]


def test_the_documented_file_and_refusal_are_what_the_parser_says() -> None:
    section = _docs_section()
    (example,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    config = parse(example, origin=ORIGIN, base_dir=PurePath("/etc/aviator"))
    assert config.trust_domain == "example.org"
    assert [i.jwks for i in config.trusted_issuers] == [
        "/etc/aviator/k8s-jwks.json",
        "https://idp.example.com/keys",
    ]
    (refusal,) = re.findall(r"```text\n(.*?)```", section, re.S)
    bad = f"trustedIssuers:\n  - issuer: {K8S}\n    jwks: k.json\n    algorithms: [HS256]\n"
    bad += '    subjectTemplate: "system:serviceaccount:{namespace}:{name}"\n'
    assert refusal.removeprefix("error: ").splitlines() == problems(bad)

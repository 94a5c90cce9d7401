"""Identity configuration files: a YAML (or JSON) document in, ``IdentityConfig`` out. Pure.

The file ``aviator up --identity-config`` and ``aviator gateway --identity-config`` read::

    trustDomain: example.org                  # optional; default aviator.local
    trustedIssuers:
      - issuer: https://kubernetes.default.svc.cluster.local
        jwks: /var/run/k8s-jwks.json          # a file, or an https:// URL
        audience: aviator
        subjectClaim: sub                     # optional; default sub
        subjectTemplate: "system:serviceaccount:{namespace}:{name}"
        namespace: agents                     # only when the template has no {namespace}
        algorithms: [RS256, ES256]            # optional; default both
        refreshSeconds: 300                   # optional; how often a JWKS URL is fetched

Everything ``trusted_issuer()``, ``JwksUrl`` and ``TokenVerifier`` would refuse at start is refused
here, with every problem at once, one per line: ``<file>: <field path>: <what was expected>``, so
that a typo costs nothing but the message. A relative JWKS path is taken relative to the file's
directory (like a kubeconfig), so the plane and the gateway it starts read the same file whatever
their working directory.

This module MUST NOT read files (the caller hands it the text and the file's directory), touch the
network, or check that a JWKS file exists: the key sources load those when they start.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import PurePath
from typing import Any
from urllib.parse import urlsplit

import yaml

from aviator.api.errors import AviatorError
from aviator.api.meta import dns1123_label_problem
from aviator.identity.jwk import SUPPORTED_ALGORITHMS
from aviator.identity.subjects import SubjectTemplate
from aviator.settings import IdentitySettings, TrustedIssuerSettings

__all__ = [
    "MAX_REFRESH_S",
    "MIN_REFRESH_S",
    "IdentityConfig",
    "IdentityConfigError",
    "jwks_url_problem",
    "parse",
    "trust_domain_problem",
]

MIN_REFRESH_S = 1.0
MAX_REFRESH_S = 86_400.0
"""``refreshSeconds`` bounds: at most a day, so that a rotated key is fetched within one even if
no token with its ``kid`` comes along to trigger an early fetch."""

MAX_TRUST_DOMAIN_BYTES = 255
"""The longest SPIFFE trust domain name (SPIFFE ID specification, section 2.1)."""

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
"""SPIFFE trust domain characters: lowercase letters, digits, dots, dashes and underscores."""

_TOP_FIELDS = ("trustDomain", "trustedIssuers")
_ISSUER_FIELDS = (
    "issuer",
    "jwks",
    "audience",
    "subjectClaim",
    "subjectTemplate",
    "namespace",
    "algorithms",
    "refreshSeconds",
)


class IdentityConfigError(AviatorError):
    """The file is not a usable identity configuration; ``problems`` holds one line per problem,
    each ``<origin>: <field path>: <what was expected>``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    """What an identity configuration file sets: the fields of ``IdentitySettings`` it names."""

    trust_domain: str | None = None
    """None: the file does not set it (the default, ``aviator.local``, stays)."""
    trusted_issuers: tuple[TrustedIssuerSettings, ...] = ()

    def apply(self, settings: IdentitySettings) -> IdentitySettings:
        """``settings`` with what this file sets."""
        return replace(
            settings,
            trust_domain=self.trust_domain or settings.trust_domain,
            trusted_issuers=self.trusted_issuers,
        )


def trust_domain_problem(value: str) -> str | None:
    """Why ``value`` is not a SPIFFE trust domain name, or None."""
    if not value:
        return "must not be empty"
    if not _TRUST_DOMAIN.fullmatch(value):
        return (
            f"{value!r} is not a SPIFFE trust domain name (lowercase letters, digits, '.', '-' "
            "and '_' only, e.g. example.org)"
        )
    if len(value) > MAX_TRUST_DOMAIN_BYTES:  # ASCII by now: characters are bytes
        return f"longer than {MAX_TRUST_DOMAIN_BYTES} bytes"
    return None


def jwks_url_problem(url: str) -> str | None:
    """Why a JWKS URL would be refused by ``JwksUrl`` (the same rule), or None: ``https://`` with
    a host, or plain ``http://`` only to a loopback address."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        return f"{url!r} is not a URL: {exc}"
    if parts.scheme == "https" and host:
        return None
    if parts.scheme == "http" and host:
        if host == "localhost":
            return None
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(host).is_loopback:
                return None
        return f"{url!r}: plain http is allowed only to a loopback address; use https://"
    return f"{url!r} must be an https:// URL with a host"


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice: in a trust configuration the second ``issuer``
    or ``audience`` silently winning would be a surprise."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            with contextlib.suppress(TypeError):  # an unhashable key is reported by the base
                if key in seen:
                    mark = key_node.start_mark
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} appears twice", mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _load(text: str, *, origin: str) -> Any:
    try:
        documents = list(yaml.load_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise IdentityConfigError(
            [f"{origin}{where}: malformed YAML: {exc.problem or exc.context or 'cannot parse'}"]
        ) from None
    except yaml.YAMLError as exc:
        raise IdentityConfigError([f"{origin}: malformed YAML: {exc}"]) from None
    documents = [doc for doc in documents if doc is not None]
    if len(documents) > 1:
        raise IdentityConfigError([f"{origin}: expected one YAML document, got {len(documents)}"])
    return documents[0] if documents else None


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


class _Checker:
    """Collects problems as ``<origin>: <path>: <message>`` while the fields are read."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(
            f"{self.origin}: {path}: {message}" if path else f"{self.origin}: {message}"
        )

    def unknown_fields(self, obj: Mapping[Any, Any], known: tuple[str, ...], *, at: str) -> None:
        for key in obj:
            if key not in known:
                where = f"{at}.{key}" if at else str(key)
                self.problem(where, f"unknown field (expected one of {', '.join(known)})")

    def string(
        self,
        obj: Mapping[str, Any],
        key: str,
        *,
        at: str,
        required: bool = False,
        check: Callable[[str], str | None] | None = None,
    ) -> str | None:
        path = f"{at}.{key}" if at else key
        if key not in obj or obj[key] is None:
            if required:
                self.problem(path, "required")
            return None
        value = obj[key]
        if not isinstance(value, str):
            self.problem(path, f"expected a string, got {_type_name(value)}")
            return None
        if not value.strip():
            self.problem(path, "must not be empty")
            return None
        try:
            value.encode()
        except UnicodeEncodeError:  # a lone surrogate, e.g. from a JSON "\ud800" escape
            self.problem(path, f"{value!r} is not valid Unicode text")
            return None
        if value != value.strip():
            self.problem(path, f"{value!r} has leading or trailing whitespace")
            return None
        if check is not None and (message := check(value)) is not None:
            self.problem(path, message)
            return None
        return value


def _algorithms(check: _Checker, raw: Any, *, at: str) -> tuple[str, ...] | None:
    path = f"{at}.algorithms"
    if not isinstance(raw, list):
        check.problem(path, f"expected a list of algorithms, got {_type_name(raw)}")
        return None
    if not raw:
        check.problem(path, f"must name at least one of {', '.join(sorted(SUPPORTED_ALGORITHMS))}")
        return None
    found: list[str] = []
    ok = True
    for index, alg in enumerate(raw):
        if not isinstance(alg, str) or alg not in SUPPORTED_ALGORITHMS:
            check.problem(
                f"{path}[{index}]",
                f"{alg!r} is not accepted (expected one of "
                f"{', '.join(sorted(SUPPORTED_ALGORITHMS))}; none and HS* never are)",
            )
            ok = False
        elif alg in found:
            check.problem(f"{path}[{index}]", f"{alg} is listed twice")
            ok = False
        else:
            found.append(alg)
    return tuple(found) if ok else None


def _refresh(check: _Checker, raw: Any, *, at: str) -> float | None:
    path = f"{at}.refreshSeconds"
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        check.problem(path, f"expected a number of seconds, got {_type_name(raw)}")
        return None
    if not MIN_REFRESH_S <= raw <= MAX_REFRESH_S:
        check.problem(
            path, f"{raw} is out of range (expected {MIN_REFRESH_S:g} to {MAX_REFRESH_S:g} seconds)"
        )
        return None
    return float(raw)


def _jwks(check: _Checker, raw: str, *, at: str, base_dir: PurePath | None) -> str | None:
    if raw.startswith(("https://", "http://")):
        if (message := jwks_url_problem(raw)) is not None:
            check.problem(f"{at}.jwks", message)
            return None
        return raw
    if "://" in raw:
        check.problem(f"{at}.jwks", f"{raw!r}: expected a JWKS file path or an https:// URL")
        return None
    path = PurePath(raw)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return str(path)


def _namespace_problem(namespace: str) -> str | None:
    problem = dns1123_label_problem(namespace)
    return None if problem is None else f"{namespace!r}: {problem}"


def _check_mapping(
    check: _Checker, *, claim: str, template: str, namespace: str | None, at: str
) -> None:
    """What ``SubjectTemplate.compile`` would refuse, said of the field to fix."""
    names_namespace = "{namespace}" in template
    if not names_namespace and namespace is None:
        check.problem(
            f"{at}.namespace",
            f"required: the subjectTemplate {template!r} has no {{namespace}}, so the agents' "
            "namespace must be given",
        )
    elif names_namespace and namespace is not None:
        check.problem(
            f"{at}.namespace", f"not allowed: the subjectTemplate {template!r} names the namespace"
        )
    else:
        try:
            SubjectTemplate.compile(claim=claim, template=template, namespace=namespace)
        except ValueError as exc:
            check.problem(f"{at}.subjectTemplate", str(exc))


def _issuer(
    check: _Checker, raw: Any, *, at: str, base_dir: PurePath | None
) -> TrustedIssuerSettings | None:
    if not isinstance(raw, dict):
        check.problem(
            at, f"expected a mapping with issuer, jwks and audience, got {_type_name(raw)}"
        )
        return None
    before = len(check.problems)
    check.unknown_fields(raw, _ISSUER_FIELDS, at=at)
    issuer = check.string(raw, "issuer", at=at, required=True)
    jwks_raw = check.string(raw, "jwks", at=at, required=True)
    jwks = _jwks(check, jwks_raw, at=at, base_dir=base_dir) if jwks_raw is not None else None
    audience = check.string(raw, "audience", at=at, required=True)
    defaults = TrustedIssuerSettings(issuer="", jwks="", audience="")
    claim = check.string(raw, "subjectClaim", at=at)
    template = check.string(raw, "subjectTemplate", at=at)
    namespace = check.string(raw, "namespace", at=at, check=_namespace_problem)
    algorithms = defaults.algorithms
    if raw.get("algorithms") is not None:
        algorithms = _algorithms(check, raw["algorithms"], at=at) or defaults.algorithms
    refresh_s = defaults.refresh_s
    if raw.get("refreshSeconds") is not None:
        refresh_s = _refresh(check, raw["refreshSeconds"], at=at) or defaults.refresh_s
    # The mapping as a whole is judged only once each of its fields is fine on its own.
    read = (("subjectClaim", claim), ("subjectTemplate", template), ("namespace", namespace))
    if all(raw.get(key) is None or value is not None for key, value in read):
        claim = claim or defaults.subject_claim
        template = template or defaults.subject_template
        _check_mapping(check, claim=claim, template=template, namespace=namespace, at=at)
    if len(check.problems) > before:
        return None
    if issuer is None or jwks is None or audience is None:
        return None  # unreachable: a required field that is missing is a problem
    if claim is None or template is None:
        return None  # unreachable: defaulted above unless a field had a problem
    return TrustedIssuerSettings(
        issuer=issuer,
        jwks=jwks,
        audience=audience,
        subject_claim=claim,
        subject_template=template,
        namespace=namespace,
        algorithms=algorithms,
        refresh_s=refresh_s,
    )


def parse(text: str, *, origin: str, base_dir: PurePath | None = None) -> IdentityConfig:
    """The configuration in ``text`` (YAML or JSON) read from ``origin`` (named in every
    problem); relative JWKS paths are taken relative to ``base_dir`` when given.
    ``IdentityConfigError`` lists every problem."""
    data = _load(text, origin=origin)
    check = _Checker(origin)
    if not isinstance(data, dict):
        check.problem(
            "", f"expected a mapping with trustDomain and trustedIssuers, got {_type_name(data)}"
        )
        raise IdentityConfigError(check.problems)
    check.unknown_fields(data, _TOP_FIELDS, at="")
    trust_domain = check.string(data, "trustDomain", at="", check=trust_domain_problem)
    raw_issuers = data.get("trustedIssuers")
    issuers: list[TrustedIssuerSettings] = []
    if raw_issuers is not None and not isinstance(raw_issuers, list):
        check.problem("trustedIssuers", f"expected a list, got {_type_name(raw_issuers)}")
    elif raw_issuers:
        seen: dict[str, int] = {}
        plane = IdentitySettings(trust_domain=trust_domain or IdentitySettings().trust_domain)
        for index, raw in enumerate(raw_issuers):
            at = f"trustedIssuers[{index}]"
            parsed = _issuer(check, raw, at=at, base_dir=base_dir)
            if parsed is None:
                continue
            if parsed.issuer == plane.effective_issuer:
                check.problem(
                    f"{at}.issuer", f"{parsed.issuer!r} is the plane's own issuer, trusted already"
                )
            elif parsed.issuer in seen:
                check.problem(
                    f"{at}.issuer",
                    f"{parsed.issuer!r} is configured twice (also trustedIssuers[{seen[parsed.issuer]}])",
                )
            else:
                seen[parsed.issuer] = index
                issuers.append(parsed)
    if check.problems:
        raise IdentityConfigError(check.problems)
    return IdentityConfig(trust_domain=trust_domain, trusted_issuers=tuple(issuers))

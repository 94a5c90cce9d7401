"""Cost of agent identity in the request path: minting, verifying uncached, verifying from the
verified-token cache (``aviator.identity``), and the cache's memory.

For each measurement: ``--runs`` runs of ``--n`` operations, printing the median and the best
run in µs per operation. Uncached verification uses a verifier with ``cache_size=0`` (every call
parses and checks the signature); cached verification repeats one token against a cache holding
``--cache`` other tokens too, so the LRU bookkeeping is that of a full cache. PyJWT's own
``jwt.decode`` is measured for comparison.

    .venv/bin/python bench/identity.py [--n 2000] [--runs 5] [--cache 10000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from aviator.identity import tokens
from aviator.identity.jwk import JwkSet
from aviator.identity.keys import KeyRing
from aviator.identity.verify import TokenVerifier, plane_issuer, trusted_issuer
from aviator.settings import IdentitySettings, TrustedIssuerSettings


def per_op_us(fn: Callable[[], object], *, n: int, runs: int) -> tuple[float, float]:
    """(median, best) µs per call over ``runs`` runs of ``n`` calls."""
    fn()  # warm up
    results = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        results.append((time.perf_counter_ns() - start) / n / 1000)
    return statistics.median(results), min(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="operations per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cache", type=int, default=10_000, help="tokens held in the cache")
    args = parser.parse_args()

    settings = IdentitySettings(cache_size=args.cache + 1)
    ring = KeyRing.load_or_create(Path(tempfile.mkdtemp()) / "keys")
    now = time.time()

    def mint(jti: str | None = None) -> str:
        return tokens.mint(
            key=ring.active,
            issuer=settings.effective_issuer,
            trust_domain=settings.trust_domain,
            namespace="support",
            name="support-bot",
            audience="gateway",
            ttl_s=900,
            now=now,
            jti=jti,
        ).token

    token = mint()
    issuer = plane_issuer(settings, keys=ring, audience="gateway")
    uncached = TokenVerifier(issuers=[issuer], trust_domain=settings.trust_domain, cache_size=0)
    cached = TokenVerifier(
        issuers=[issuer], trust_domain=settings.trust_domain, cache_size=settings.cache_size
    )
    others = [mint(f"fill-{i}") for i in range(args.cache)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for other in others:
        cached.verify(other)
    per_entry = (tracemalloc.get_traced_memory()[0] - before) / max(1, len(others))
    tracemalloc.stop()
    cached.verify(token)
    header = f"Bearer {token}"

    public = jwt.PyJWKSet.from_dict(ring.jwks())[ring.active.kid].key

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    k8s = TrustedIssuerSettings(
        issuer="https://kubernetes.default.svc",
        jwks="unused",
        audience="aviator",
        subject_template="system:serviceaccount:{namespace}:{name}",
    )
    k8s_keys = JwkSet.from_document(
        {"keys": [{**RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True), "kid": "sa"}]}
    )
    rs_verifier = TokenVerifier(
        issuers=[trusted_issuer(k8s, keys=k8s_keys)],
        trust_domain=settings.trust_domain,
        cache_size=0,
    )
    sa_token = jwt.encode(
        {
            "iss": k8s.issuer,
            "sub": "system:serviceaccount:support:support-bot",
            "aud": ["aviator"],
            "iat": int(now),
            "exp": int(now) + 3600,
        },
        rsa_key,
        algorithm="RS256",
        headers={"kid": "sa"},
    )

    rows: list[tuple[str, Callable[[], object], int]] = [
        ("mint (ES256 sign)", mint, args.n),
        ("verify, uncached (ES256)", lambda: uncached.verify(token), args.n),
        ("verify, cached (hit)", lambda: cached.verify(token), args.n * 50),
        ("authenticate('Bearer …'), cached", lambda: cached.authenticate(header), args.n * 50),
        ("verify, uncached, external RS256", lambda: rs_verifier.verify(sa_token), args.n),
        (
            "PyJWT jwt.decode (ES256), for comparison",
            lambda: jwt.decode(token, public, algorithms=["ES256"], audience="gateway"),
            args.n,
        ),
    ]
    print(f"token: {len(token)} bytes; cache: {args.cache + 1} entries, ~{per_entry:.0f} B each")
    print(f"{'operation':44} {'median µs':>10} {'best µs':>10}")
    for name, fn, n in rows:
        median, best = per_op_us(fn, n=n, runs=args.runs)
        print(f"{name:44} {median:10.1f} {best:10.1f}")
    stats = cached.cache_stats()
    print(f"cache: {stats.hits} hits, {stats.misses} misses, {stats.size} entries")


if __name__ == "__main__":
    main()

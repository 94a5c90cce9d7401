"""Agent identity: the plane's signing keys, agent tokens in the JWT-SVID shape, and verifying
bearer tokens into a ``Principal``.

Modules: ``jwk`` (key types, JWKS parsing; pure), ``keys`` (``KeyRing``: the plane's keys on
disk; the only module here that touches files), ``tokens`` (``mint``; pure), ``subjects`` (which
agent a token names; pure), ``verify`` (``TokenVerifier``; pure, clock injected), ``sources``
(JWKS files and URLs refreshed in the background: the I/O shell around ``verify``).

This package MUST:
- sign only ES256 with the plane's active key, tokens of at most 1 h, one audience each;
- refuse ``alg: none``, HS* and any algorithm an issuer is not configured for, before a key is
  looked at; refuse unknown keys, bad signatures, expired, not-yet-valid and wrong-audience tokens;
- keep every retired key published until the last token it signed has expired.

It MUST NOT:
- log, print or put into an exception a token or a private key (``detail`` texts carry claim
  values only, quoted and cut short);
- import the store, controllers, runtime, gateway, Control API or CLI: callers hand it keys and
  settings; it hands back tokens and principals;
- do network I/O outside ``sources`` or disk I/O outside ``keys`` and ``sources``.
"""

JWKS_PATH = "/.well-known/jwks.json"
"""Where the Control API serves the plane's public keys, without authentication."""

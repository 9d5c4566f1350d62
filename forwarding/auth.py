"""Authentication of forwarded requests between peers: an HMAC-SHA256 keyed with the cluster
secret (``DWASM_CLUSTER_SECRET``).

A forwarded request carries, besides the client's own headers:

- ``X-Dwasm-Forwarded-By``: the sending node's id;
- ``X-Dwasm-Topology-Version``: the shard map version the sender routed with;
- ``X-Dwasm-Forward-Timestamp``: Unix seconds when it was signed;
- ``X-Dwasm-Forward-Body-Sha256``: hex SHA-256 of the body;
- ``X-Dwasm-Forward-Signature``: hex HMAC over all of the above plus the method and the path
  with its query string.

The receiver recomputes the HMAC (constant-time comparison), accepts timestamps within
:data:`MAX_SKEW` seconds of its own clock, and checks the body against the digest once it has
read it. Any request that carries one of these headers (or any other ``X-Dwasm-Forward*``
header) and does not verify is refused with 403: a client cannot pass itself off as a peer.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

FORWARDED_BY = "x-dwasm-forwarded-by"
TOPOLOGY_VERSION = "x-dwasm-topology-version"
TIMESTAMP = "x-dwasm-forward-timestamp"
BODY_SHA256 = "x-dwasm-forward-body-sha256"
SIGNATURE = "x-dwasm-forward-signature"
#: Response header marking a 421 from the forwarding layer (not from an application route).
MISDIRECTED = "x-dwasm-misdirected"
SIGNED_HEADERS = (FORWARDED_BY, TOPOLOGY_VERSION, TIMESTAMP, BODY_SHA256, SIGNATURE)

#: Accepted difference between the sender's and the receiver's clocks, in seconds.
MAX_SKEW = 60.0


class ForwardAuthError(Exception):
    """A request claims to be forwarded by a peer and is not; the message says why."""


def is_forwarding_header(name: str) -> bool:
    """True for the headers only peers may send (lower-case ``name``)."""
    return name.startswith("x-dwasm-forward") or name == TOPOLOGY_VERSION


def _mac(secret: str, method: str, target: str, timestamp: str, body_sha256: str,
         sender: str, version: str) -> str:
    message = "\n".join((method.upper(), target, timestamp, body_sha256, sender, version))
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def sign(secret: str, method: str, target: str, body_sha256: str, sender: str, version: int,
         now: float | None = None) -> dict[str, str]:
    """The headers that make a request to ``target`` (path and query) a forwarded one."""
    timestamp = str(int(time.time() if now is None else now))
    return {FORWARDED_BY: sender, TOPOLOGY_VERSION: str(version), TIMESTAMP: timestamp,
            BODY_SHA256: body_sha256,
            SIGNATURE: _mac(secret, method, target, timestamp, body_sha256, sender,
                            str(version))}


@dataclass(frozen=True)
class Forwarded:
    """What a verified forwarded request says about its sender."""

    sender: str
    version: int
    body_sha256: str


def verify(secret: str | None, method: str, target: str, headers: Mapping[str, str],
           now: float | None = None) -> Forwarded:
    """Checks the signature headers (lower-case names in ``headers``); raises
    :class:`ForwardAuthError`. The body digest is checked by the caller after reading it."""
    if not secret:
        raise ForwardAuthError("this node has no cluster secret: it accepts no forwarded "
                               "requests")
    missing = [h for h in SIGNED_HEADERS if not headers.get(h)]
    if missing:
        raise ForwardAuthError(f"forwarding headers without {', '.join(missing)}")
    timestamp = headers[TIMESTAMP]
    try:
        signed_at = int(timestamp)
        version = int(headers[TOPOLOGY_VERSION])
    except ValueError:
        raise ForwardAuthError("malformed forwarding timestamp or topology version") from None
    clock = time.time() if now is None else now
    if abs(clock - signed_at) > MAX_SKEW:
        raise ForwardAuthError("forwarding timestamp outside the accepted clock skew")
    expected = _mac(secret, method, target, timestamp, headers[BODY_SHA256],
                    headers[FORWARDED_BY], headers[TOPOLOGY_VERSION])
    if not hmac.compare_digest(expected.encode(), headers[SIGNATURE].encode()):
        raise ForwardAuthError("bad forwarding signature")
    return Forwarded(headers[FORWARDED_BY], version, headers[BODY_SHA256].lower())


def strip(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` without any forwarding header (before signing them anew)."""
    return [(k, v) for k, v in headers if not is_forwarding_header(k.decode("latin-1").lower())]

"""Where the server may read from and send to on a client's behalf.

Clients name URLs in three places: an async job's ``input_uri``, a batch run's
input and output, and a webhook's ``callback_url``. Each is checked against
the operator's allowlist (``egress_*`` settings) when it is submitted and
again when it is used, so a setting tightened later applies to queued work.

fsspec chains filesystems (``simplecache::file:///x``, ``zip://a::s3://b/c``);
every layer of a chain must be an allowed scheme and every layer with a
location is checked, so a wrapper cannot carry a path past the root check.

HTTP targets (webhooks, and ``http(s)`` inputs where allowed) are resolved
first; an address that is loopback, private, link-local or otherwise not
public is refused unless it lies in ``egress_private_networks``. The
connection then goes to the checked address itself (the host name travels in
the ``Host`` header and TLS SNI), so a DNS answer that changes between check
and connect (rebinding) cannot redirect it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import httpx

from zeroserve.errors import BadRequest, Forbidden, NotFound, PayloadTooLarge, ZeroserveError

if TYPE_CHECKING:
    from zeroserve.settings import Settings

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]
"""``(host, port) -> addresses``; injected so tests need no DNS."""

LOCAL_SCHEMES = frozenset({"file", "local"})
BUCKET_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"})
HTTP_SCHEMES = frozenset({"http", "https"})
DEFAULT_SCHEMES = ("file", "s3", "gs", "gcs", "az", "abfs", "abfss")


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True, slots=True)
class Layer:
    """One filesystem of an fsspec chain: ``scheme`` and what follows ``scheme://``."""

    scheme: str
    location: str | None
    """None for a pure wrapper such as ``simplecache`` (it has no target of its own)."""


def layers(uri: str) -> list[Layer]:
    """Split an fsspec URL into its chained layers, outermost first."""
    out: list[Layer] = []
    parts = uri.split("::")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if "://" in part:
            scheme, _, rest = part.partition("://")
            out.append(Layer(scheme.lower(), rest))
        elif ":" not in part and (last or "/" in part):
            out.append(Layer("file", part))  # a plain local path
        elif ":" not in part:
            out.append(Layer(part.lower(), None))  # a wrapper (simplecache, blockcache ...)
        else:
            scheme = part.split(":", 1)[0].lower()
            out.append(Layer(scheme, part.split(":", 1)[1]))
    return out


@dataclass(frozen=True, slots=True)
class HttpTarget:
    """An HTTP URL pinned to the address it was checked against."""

    url: str
    """The URL with the host replaced by the checked address."""
    hostname: str
    """The original host name, for TLS SNI and certificate checks."""
    host_header: str
    address: str

    @property
    def headers(self) -> dict[str, str]:
        return {"host": self.host_header}

    @property
    def extensions(self) -> dict[str, str]:
        return {"sni_hostname": self.hostname}


@dataclass(frozen=True)
class EgressPolicy:
    """The allowlist for one use (async input, batch input/output, webhooks)."""

    schemes: frozenset[str]
    roots: tuple[Path, ...] = ()
    buckets: frozenset[str] = frozenset()
    hosts: frozenset[str] = frozenset()
    private_networks: tuple[IpNetwork, ...] = ()
    resolver: Resolver = field(default=system_resolver, compare=False)
    roots_setting: str = "ZEROSERVE_ASYNC_INPUT_ROOTS"

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        roots: Sequence[Path | str],
        *,
        schemes: Sequence[str] | None = None,
        roots_setting: str = "ZEROSERVE_ASYNC_INPUT_ROOTS",
        resolver: Resolver = system_resolver,
    ) -> EgressPolicy:
        buckets = set(settings.egress_buckets)
        own = layers(settings.resolved_artifact_url)[-1]
        if own.scheme in BUCKET_SCHEMES and own.location:
            buckets.add(own.location.split("/", 1)[0])  # the server's own store
        return cls(
            schemes=frozenset(s.lower() for s in (schemes or settings.egress_schemes)),
            roots=tuple(Path(r).resolve() for r in roots),
            buckets=frozenset(buckets),
            hosts=frozenset(h.lower() for h in settings.egress_hosts),
            private_networks=tuple(
                ipaddress.ip_network(n, strict=False) for n in settings.egress_private_networks
            ),
            resolver=resolver,
            roots_setting=roots_setting,
        )

    # fsspec URLs
    def check_uri(self, uri: str, what: str = "input_uri") -> None:
        """Refuse ``uri`` unless every layer of it is allowed (403 naming the setting)."""
        if not isinstance(uri, str) or not uri.strip():
            raise BadRequest(f"{what} must be a non-empty string URL")
        for layer in layers(uri):
            scheme = "file" if layer.scheme == "local" else layer.scheme
            if scheme not in self.schemes:
                allowed = ", ".join(sorted(self.schemes)) or "none"
                raise Forbidden(
                    f"{what}: the {scheme!r} scheme is not allowed here (allowed: {allowed}); "
                    "the operator can add it to ZEROSERVE_EGRESS_SCHEMES"
                )
            if layer.location is None:
                continue
            if scheme in LOCAL_SCHEMES:
                self._check_path(layer.location, what)
            elif scheme in BUCKET_SCHEMES:
                self._check_bucket(scheme, layer.location, what)
            elif scheme in HTTP_SCHEMES:
                self.http_target(f"{scheme}://{layer.location}", what)

    def _check_path(self, location: str, what: str) -> None:
        path = location.split("?", 1)[0]
        if path.startswith("localhost/"):
            path = path[len("localhost") :]
        resolved = Path(path).resolve()
        if not any(resolved.is_relative_to(root) for root in self.roots):
            raise Forbidden(
                f"{what} is outside the directories this server may use; "
                f"the operator can add its directory to {self.roots_setting}"
            )

    def _check_bucket(self, scheme: str, location: str, what: str) -> None:
        bucket = location.split("/", 1)[0].split("@", 1)[-1]
        if bucket not in self.buckets:
            raise Forbidden(
                f"{what}: bucket {bucket!r} ({scheme}) is not in the allowlist; "
                "the operator can add it to ZEROSERVE_EGRESS_BUCKETS"
            )

    # HTTP
    def http_target(self, url: str, what: str = "callback_url") -> HttpTarget:
        """Check an http(s) URL and pin it to a checked address of its host."""
        parts = urlsplit(url)
        if parts.scheme not in HTTP_SCHEMES or not parts.hostname:
            raise BadRequest(f"{what} must be an http(s) URL with a host")
        if parts.username or parts.password:
            raise BadRequest(f"{what} must not carry credentials in the URL")
        host = parts.hostname.lower()
        if self.hosts and not any(_host_matches(host, pattern) for pattern in self.hosts):
            raise Forbidden(
                f"{what}: host {host!r} is not in the allowlist; "
                "the operator can add it to ZEROSERVE_EGRESS_HOSTS"
            )
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = [str(_address(host))] if _is_ip(host) else self.resolver(host, port)
        except (OSError, UnicodeError):
            raise BadRequest(f"{what}: host {host!r} does not resolve") from None
        if not addresses:
            raise BadRequest(f"{what}: host {host!r} does not resolve")
        checked = [_address(a) for a in addresses]
        refused = [a for a in checked if not self._reachable(a)]
        if refused:
            # Any non-public answer refuses the host: we will not pick among them.
            raise Forbidden(
                f"{what}: host {host!r} resolves to a loopback, private or link-local "
                "address; the operator can allow that network in "
                "ZEROSERVE_EGRESS_PRIVATE_NETWORKS"
            )
        address = checked[0]
        netloc = f"[{address}]" if address.version == 6 else str(address)
        if parts.port:
            netloc += f":{parts.port}"
        pinned = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        header_host = host if not parts.port else f"{host}:{parts.port}"
        return HttpTarget(url=pinned, hostname=host, host_header=header_host, address=str(address))

    def _reachable(self, address: IpAddress) -> bool:
        if any(address in network for network in self.private_networks):
            return True
        return address.is_global and not address.is_multicast


def _address(text: str) -> IpAddress:
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_ip(host: str) -> bool:
    try:
        _address(host)
    except ValueError:
        return False
    return True


def _host_matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def fetch_http(policy: EgressPolicy, url: str, max_bytes: int, timeout_s: float = 30.0) -> bytes:
    """GET an http(s) input through the policy, connecting to the checked address."""
    target = policy.http_target(url, "input_uri")
    try:
        return _get(target, max_bytes, timeout_s)
    except httpx.HTTPError:
        # Not the exact error: it would tell the client what listens where.
        raise ZeroserveError("input_uri could not be fetched") from None


def _get(target: HttpTarget, max_bytes: int, timeout_s: float) -> bytes:
    with (
        httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False) as client,
        client.stream(
            "GET", target.url, headers=target.headers, extensions=target.extensions
        ) as response,
    ):
        if response.status_code != 200:
            raise NotFound(f"input_uri answered HTTP {response.status_code}")
        data = bytearray()
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) > max_bytes:
                raise PayloadTooLarge(f"input_uri is over the {max_bytes:,}-byte limit")
        return bytes(data)

"""The access guard: ASGI middleware in front of every route of a gateway process.

It answers, before any route runs: is the ``Host`` one of ours (no DNS
rebinding), is a browser ``Origin`` ours, is a state-changing call one that a
cross-site page cannot forge (a non-simple content type, the
``X-Zeroserve-Client`` header or a key), does the key's scope allow this route,
is the client over its failed-authentication, request-rate or body-byte
budget, and is the body in a content type and encoding we read (415 if not).
Admin actions and failed authentications get one audit log line each.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any

import orjson

from zeroserve.errors import ServiceUnavailable
from zeroserve.gateway.ratelimit import FailureCounter, TokenBucket, TokenBuckets
from zeroserve.settings import Settings, is_loopback

audit = logging.getLogger("zeroserve.audit")

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
CLIENT_HEADER = b"x-zeroserve-client"
SIMPLE_TYPES = {"application/x-www-form-urlencoded", "multipart/form-data", "text/plain", ""}
"""Content types a web page may POST cross-site without a CORS preflight."""
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
PREFLIGHTED_METHODS = {"PUT", "DELETE", "PATCH"}
"""Browsers preflight these, and we never answer a preflight with CORS headers."""
LOOPBACK_NAMES = {"localhost", "localhost."}
OPEN_PATHS = {"/healthz", "/v2/health/live"}
LLM_ROUTES = {"/v1/chat/completions", "/v1/embeddings", "/v1/models", "/v1/messages"}
"""The LLM gateway checks its own keys there (virtual keys, and the server's data keys)."""


class Need(Enum):
    """What a route needs from the caller's key."""

    OPEN = "open"
    ANY = "any valid key"
    READ = "read"
    INVOKE = "invoke"
    DEPLOY = "deploy"
    ADMIN = "admin"


GRANTS: dict[str, frozenset[Need]] = {
    "admin": frozenset({Need.ADMIN, Need.DEPLOY, Need.INVOKE, Need.READ, Need.ANY}),
    "deploy": frozenset({Need.DEPLOY, Need.READ, Need.ANY}),
    "invoke": frozenset({Need.INVOKE, Need.ANY}),
    "read": frozenset({Need.READ, Need.ANY}),
}
ADMIN_ONLY_READS = ("/api/settings",)
DEPLOY_PREFIXES = ("/api/models", "/api/deploy", "/api/endpoints")


def needed(method: str, path: str) -> Need:
    """The scope a route needs; the table in docs/security.md lists it."""
    if path in OPEN_PATHS or path.rstrip("/") in LLM_ROUTES:
        return Need.OPEN
    if is_data_route(method, path) or path.startswith("/v1/jobs/"):
        return Need.INVOKE
    if path in ("/readyz", "/v2", "/v2/health/ready") or path.startswith("/v2/models/"):
        return Need.ANY
    if path in ADMIN_ONLY_READS or path.endswith("/webhook-secret"):
        return Need.ADMIN
    if method in SAFE_METHODS:
        return Need.READ if path.startswith("/api") or path == "/metrics" else Need.ANY
    if path.startswith("/api/cost/"):
        return Need.READ  # estimates compute; they change nothing
    if path.startswith(DEPLOY_PREFIXES):
        return Need.DEPLOY
    return Need.ADMIN


def streams_to_disk(method: str, path: str) -> bool:
    """Uploads written to disk as they arrive (async inputs, model files): outside the
    in-memory body budget, which would otherwise refuse every upload larger than it."""
    if method != "POST":
        return False
    return (path.startswith("/v1/endpoints/") and path.endswith("/async")) or (
        path.startswith("/api/models/") and path.endswith("/versions")
    )


def is_data_route(method: str, path: str) -> bool:
    if method != "POST":
        return False
    if path.startswith("/v1/endpoints/"):
        return path.endswith(("/invocations", "/async"))
    return path.startswith("/v2/models/") and path.endswith("/infer")


class Refusal(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


class BodyBudgetExceeded(ServiceUnavailable):
    code = "server_busy"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


def key_id(digest: bytes) -> str:
    """A name for a key in logs that does not reveal it."""
    return "key:" + digest.hex()[:12]


HOSTS_REMEMBERED = 64
"""Distinct allowed Host headers remembered per process, so the check is one set lookup."""


class TrustedHosts:
    """Host names this server answers to: loopback names always, then the setting."""

    def __init__(self, settings: Settings) -> None:
        self.patterns = [h.lower().rstrip(".") for h in settings.trusted_hosts]
        self.any = "*" in self.patterns or (
            not self.patterns and not is_loopback(settings.host) and settings.auth_enabled
        )
        if not is_loopback(settings.host) and settings.host not in ("0.0.0.0", "::", ""):
            self.patterns.append(settings.host.lower())

    def allows(self, host: str) -> bool:
        if self.any or host in LOOPBACK_NAMES or host.endswith(".localhost"):
            return True
        if is_loopback(host):
            return True
        return any(
            host == p or (p.startswith("*.") and host.endswith(p[1:])) for p in self.patterns
        )


def host_name(value: str) -> str:
    """``Host`` without its port, lower-cased; IPv6 literals without brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    name, _, _ = value.partition(":")
    return name.rstrip(".") or value


class AccessGuard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._hosts_seen: set[bytes] = set()
        self.auth = settings.auth_enabled
        self.keys: dict[bytes, set[Need]] = {}
        for scope, keys in (
            ("admin", settings.admin_api_keys),
            ("deploy", settings.deploy_api_keys),
            ("invoke", settings.api_keys),
            ("read", settings.read_api_keys),
        ):
            for key in keys:
                self.keys.setdefault(_digest(key.encode()), set()).update(GRANTS[scope])
        self.hosts = TrustedHosts(settings)
        self.origins = {o.lower().rstrip("/") for o in settings.allowed_origins}
        self.failures = FailureCounter(settings.auth_failure_limit, settings.auth_failure_window_s)
        rps = settings.rate_limit_rps
        self.global_rate = TokenBucket(rps, max(1.0, rps)) if rps else None
        key_rps = settings.key_rate_limit_rps
        self.key_rates = TokenBuckets(key_rps) if key_rps else None
        self.max_inflight = int(settings.max_inflight_mb * 1024 * 1024)
        self.inflight = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        headers = {k: v for k, v in scope["headers"] if k in _WANTED}
        client = (scope.get("client") or ("unknown", 0))[0]
        need = needed(method, path)
        try:
            self._check_host_and_origin(headers)
            digest = self._check_key(need, headers, client, method, path)
            self._check_forgery(method, path, headers)
            self._check_body_type(method, path, headers)
            self._check_rate(digest, client, need)
            streamed = streams_to_disk(method, path)
            reserved = 0 if streamed else self._reserve(headers)
        except Refusal as refusal:
            await _refuse(send, refusal)
            return

        audited = need in (Need.ADMIN, Need.DEPLOY) and method not in SAFE_METHODS
        if not audited and (streamed or b"content-length" in headers):
            # The declared length is reserved already and HTTP/1.1 sends no more than it:
            # nothing to count per chunk (the hot path of every inference request).
            try:
                await self.app(scope, receive, send)
            finally:
                self.inflight -= reserved
            return
        status = [0]

        async def counted_receive() -> Any:
            nonlocal reserved
            message = await receive()
            size = len(message.get("body", b""))
            if size and not streamed and message["type"] == "http.request":
                seen[0] += size
                if seen[0] > reserved:
                    extra = seen[0] - reserved
                    if self.inflight + extra > self.max_inflight:
                        raise BodyBudgetExceeded(_busy_message(self.max_inflight))
                    self.inflight += extra
                    reserved += extra
            return message

        async def watched_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        seen = [0]
        try:
            await self.app(scope, counted_receive, watched_send if audited else send)
        finally:
            self.inflight -= reserved
            if audited:
                audit.info(
                    "control API call",
                    extra={
                        "method": method,
                        "path": path,
                        "status": status[0],
                        "key": key_id(digest) if digest else "anonymous",
                        "client": client,
                    },
                )

    # checks, in the order they run
    def _check_host_and_origin(self, headers: dict[bytes, bytes]) -> None:
        host_header = headers.get(b"host", b"")
        if host_header in self._hosts_seen and b"origin" not in headers:
            return  # the common case: a Host already allowed, no browser Origin
        raw_host = host_header.decode("latin-1")
        if raw_host and not self.hosts.allows(host_name(raw_host)):
            raise Refusal(
                421,
                "untrusted_host",
                f"this server does not answer to Host {host_name(raw_host)!r}; add it to "
                "ZEROSERVE_TRUSTED_HOSTS if it is really this server's name",
            )
        origin = headers.get(b"origin")
        if origin is None:
            if len(self._hosts_seen) < HOSTS_REMEMBERED:
                self._hosts_seen.add(host_header)
            return
        text = origin.decode("latin-1").lower().rstrip("/")
        _, _, netloc = text.partition("://")
        if text in self.origins or (netloc and netloc == raw_host.lower()):
            return
        raise Refusal(
            403,
            "cross_origin_refused",
            f"requests from web pages at {text!r} are refused; add the origin to "
            "ZEROSERVE_ALLOWED_ORIGINS to allow it",
        )

    def _check_key(
        self, need: Need, headers: dict[bytes, bytes], client: str, method: str, path: str
    ) -> bytes | None:
        key = _presented_key(headers)
        if not self.auth:
            return _digest(key) if key else None
        if need is Need.OPEN:
            return None
        wait = self.failures.blocked_for(client)
        if wait:
            raise Refusal(
                429,
                "too_many_failed_authentications",
                "too many failed authentications from this address; retry later",
                {"Retry-After": str(max(1, round(wait)))},
            )
        if not key:
            # Audited, not counted: a missing key guesses nothing, and counting it would let
            # one misconfigured script lock every client behind the same address out.
            audit.warning(
                "authentication failed",
                extra={"method": method, "path": path, "client": client, "reason": "no key"},
            )
            raise Refusal(
                401,
                "unauthorized",
                "this server requires an API key: send 'Authorization: Bearer <key>' "
                "or 'X-API-Key: <key>'",
                {"WWW-Authenticate": "Bearer"},
            )
        digest = _digest(key)
        grants = self.keys.get(digest)
        if grants is None:
            self._failed(client, method, path, "unknown key")
            raise Refusal(403, "forbidden", "the API key is not valid")
        if need not in grants:
            audit.warning(
                "key scope refused",
                extra={"method": method, "path": path, "key": key_id(digest), "client": client},
            )
            raise Refusal(
                403,
                "forbidden",
                f"this key may not call {method} {path}: it needs a key with the "
                f"{need.value} scope ({_key_setting(need)})",
            )
        return digest

    def _failed(self, client: str, method: str, path: str, why: str) -> None:
        self.failures.add(client)
        audit.warning(
            "authentication failed",
            extra={"method": method, "path": path, "client": client, "reason": why},
        )

    def _check_forgery(self, method: str, path: str, headers: dict[bytes, bytes]) -> None:
        """A state-changing control call must be one a cross-site page cannot send."""
        if method in SAFE_METHODS or method in PREFLIGHTED_METHODS or is_data_route(method, path):
            return
        if CLIENT_HEADER in headers or b"authorization" in headers or b"x-api-key" in headers:
            return
        if _mime(headers) not in SIMPLE_TYPES:
            return
        raise Refusal(
            403,
            "cross_site_refused",
            f"{method} {path} changes state and looks like a cross-site form post; send the "
            "header 'X-Zeroserve-Client: <your tool>' (the CLI does) or a JSON body",
        )

    def _check_body_type(self, method: str, path: str, headers: dict[bytes, bytes]) -> None:
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        if encoding not in (b"identity", b""):
            raise Refusal(
                415,
                "unsupported_media_type",
                f"Content-Encoding {encoding.decode('latin-1')!r} is not supported; "
                "send the body uncompressed",
            )
        if method in SAFE_METHODS:
            return
        mime = _mime(headers)
        if is_data_route(method, path):
            ok = mime in ("", "application/json", "application/octet-stream")
            hint = "application/json (or application/octet-stream for v2 binary tensors)"
        elif path.startswith("/api/"):
            ok = mime in ("", "application/json", "multipart/form-data")
            hint = "application/json (multipart/form-data for model uploads)"
        else:
            return
        if not ok and not mime.endswith("+json"):
            raise Refusal(
                415,
                "unsupported_media_type",
                f"Content-Type {mime!r} is not accepted here; send {hint}",
            )

    def _check_rate(self, digest: bytes | None, client: str, need: Need) -> None:
        if need is Need.OPEN:
            return
        if self.global_rate is not None:
            wait = self.global_rate.take()
            if wait:
                raise _rate_refusal("the server is at its request-rate limit", wait)
        if self.key_rates is not None:
            wait = self.key_rates.take(digest or client.encode())
            if wait:
                raise _rate_refusal("this key (or address) is at its request-rate limit", wait)

    def _reserve(self, headers: dict[bytes, bytes]) -> int:
        declared = headers.get(b"content-length", b"")
        size = int(declared) if declared.isdigit() and len(declared) < 16 else 0
        if size > self.max_inflight:
            raise Refusal(
                413,
                "payload_too_large",
                f"the body is {size:,} bytes, more than the server holds for all requests "
                "together (ZEROSERVE_MAX_INFLIGHT_MB); send it to the async endpoint",
            )
        if size and self.inflight + size > self.max_inflight:
            raise Refusal(
                503, "server_busy", _busy_message(self.max_inflight), {"Retry-After": "1"}
            )
        self.inflight += size
        return size


def _rate_refusal(message: str, wait: float) -> Refusal:
    return Refusal(
        429,
        "too_many_requests",
        f"{message}; retry in {wait:.1f} s",
        {"Retry-After": str(max(1, round(wait + 0.49)))},
    )


def _busy_message(limit: int) -> str:
    return (
        f"the server holds {limit // (1024 * 1024)} MB of request bodies already "
        "(ZEROSERVE_MAX_INFLIGHT_MB); retry shortly"
    )


def _key_setting(need: Need) -> str:
    return {
        Need.ADMIN: "ZEROSERVE_ADMIN_API_KEYS",
        Need.DEPLOY: "ZEROSERVE_DEPLOY_API_KEYS or ZEROSERVE_ADMIN_API_KEYS",
        Need.INVOKE: "ZEROSERVE_API_KEYS or ZEROSERVE_ADMIN_API_KEYS",
        Need.READ: "ZEROSERVE_READ_API_KEYS, DEPLOY or ADMIN",
    }.get(need, "any key")


def _presented_key(headers: dict[bytes, bytes]) -> bytes | None:
    auth = headers.get(b"authorization", b"")
    if auth[:7].lower() == b"bearer ":
        return auth[7:].strip() or None
    return headers.get(b"x-api-key") or None


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def _mime(headers: dict[bytes, bytes]) -> str:
    raw = headers.get(b"content-type", b"").decode("latin-1")
    return raw.split(";", 1)[0].strip().lower()


async def _refuse(send: Any, refusal: Refusal) -> None:
    body = orjson.dumps({"error": refusal.message, "code": refusal.code})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in refusal.headers.items()),
    ]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_WANTED = {
    b"host",
    b"origin",
    b"authorization",
    b"x-api-key",
    b"content-type",
    b"content-encoding",
    b"content-length",
    CLIENT_HEADER,
}

"""The access guard in front of a stub app: hosts, origins, forgery, scopes, limits."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest

from zeroserve.gateway.access import AccessGuard, Need, needed
from zeroserve.settings import Settings

ADMIN = "admin-key-0123456789"
DEPLOY = "deploy-key-0123456789"
INVOKE = "invoke-key-0123456789"
READ = "read-key-0123456789"


class Stub:
    """Answers 200 with the body it read, so a test sees when a request got through."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls += 1
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def client(settings: Settings, stub: Stub | None = None) -> httpx.AsyncClient:
    guard = AccessGuard(stub or Stub(), settings)
    transport = httpx.ASGITransport(app=guard, client=("10.1.2.3", 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8300")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def keyed() -> Settings:
    return Settings(
        admin_api_keys=[ADMIN],
        deploy_api_keys=[DEPLOY],
        api_keys=[INVOKE],
        read_api_keys=[READ],
        auth_failure_limit=5,
    )


def test_cross_site_multipart_post_is_refused_on_a_keyless_loopback_server() -> None:
    stub = Stub()

    async def go() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        async with client(Settings(), stub) as http:
            form = {"trust": "true"}
            files = {"file": ("evil.py", b"import os; os.system('touch /tmp/pwned')")}
            # What fetch(url, {mode: 'no-cors', method: 'POST', body: FormData}) sends
            forged = await http.post(
                "/api/models/evil/versions",
                data=form,
                files=files,
                headers={"origin": "https://evil.example"},
            )
            # The same without Origin (an old browser): no custom header, a simple type
            no_origin = await http.post("/api/models/evil/versions", data=form, files=files)
            cli = await http.post(
                "/api/models/ok/versions",
                data=form,
                files=files,
                headers={"x-zeroserve-client": "zeroserve-cli/1"},
            )
            return forged, no_origin, cli

    forged, no_origin, cli = run(go())
    assert forged.status_code == 403
    assert forged.json()["code"] == "cross_origin_refused"
    assert no_origin.status_code == 403
    assert no_origin.json()["code"] == "cross_site_refused"
    assert "X-Zeroserve-Client" in no_origin.json()["error"]
    assert cli.status_code == 200
    assert stub.calls == 1


def test_text_plain_and_bodiless_posts_need_the_client_header() -> None:
    async def go() -> list[int]:
        async with client(Settings()) as http:
            return [
                (
                    await http.post(
                        "/api/deploy", content=b"{}", headers={"content-type": "text/plain"}
                    )
                ).status_code,
                (await http.post("/api/endpoints/x/evict")).status_code,
                (await http.post("/api/deploy", json={"model": "m"})).status_code,
                (await http.delete("/api/endpoints/x")).status_code,  # always preflighted
            ]

    assert run(go()) == [403, 403, 200, 200]


def test_dns_rebinding_host_is_refused_and_loopback_names_pass() -> None:
    async def go() -> list[int]:
        async with client(Settings()) as http:
            codes = []
            for host in (
                "attacker.example",
                "attacker.example:8300",
                "localhost:8300",
                "127.0.0.1",
                "[::1]:8300",
            ):
                codes.append((await http.get("/api/models", headers={"host": host})).status_code)
            return codes

    assert run(go()) == [421, 421, 200, 200, 200]


def test_trusted_hosts_setting_and_same_origin() -> None:
    settings = Settings(
        trusted_hosts=["*.corp.example"], allowed_origins=["https://ui.corp.example"]
    )

    async def go() -> list[int]:
        async with client(settings) as http:
            host = {"host": "zs.corp.example"}
            return [
                (await http.get("/api/models", headers=host)).status_code,
                (await http.get("/api/models", headers={"host": "evil.example"})).status_code,
                (
                    await http.get(
                        "/api/models", headers={**host, "origin": "http://zs.corp.example"}
                    )
                ).status_code,
                (
                    await http.get(
                        "/api/models", headers={**host, "origin": "https://ui.corp.example"}
                    )
                ).status_code,
                (await http.get("/api/models", headers={**host, "origin": "null"})).status_code,
            ]

    assert run(go()) == [200, 421, 200, 200, 403]


@pytest.mark.parametrize(
    ("method", "path", "need"),
    [
        ("GET", "/healthz", Need.OPEN),
        ("GET", "/v2/health/live", Need.OPEN),
        ("GET", "/metrics", Need.READ),
        ("GET", "/api/docs", Need.READ),
        ("GET", "/api/openapi.json", Need.READ),
        ("GET", "/readyz", Need.ANY),
        ("GET", "/v2/models/rf", Need.ANY),
        ("POST", "/v2/models/rf/infer", Need.INVOKE),
        ("POST", "/v1/endpoints/rf/invocations", Need.INVOKE),
        ("GET", "/v1/jobs/abc", Need.INVOKE),
        ("POST", "/api/models/rf/versions", Need.DEPLOY),
        ("POST", "/api/deploy", Need.DEPLOY),
        ("DELETE", "/api/endpoints/rf", Need.DEPLOY),
        ("GET", "/api/settings", Need.ADMIN),
        ("GET", "/api/endpoints/rf/webhook-secret", Need.ADMIN),
        ("POST", "/api/batch", Need.ADMIN),
        ("POST", "/api/jobs/x/retry", Need.ADMIN),
        ("POST", "/api/cost/estimate", Need.READ),
    ],
)
def test_route_scopes(method: str, path: str, need: Need) -> None:
    assert needed(method, path) is need


def test_with_keys_every_route_but_health_needs_a_key_and_scopes_hold() -> None:
    async def go() -> dict[str, list[int]]:
        async with client(keyed()) as http:
            routes = [
                ("GET", "/metrics"),
                ("GET", "/api/docs"),
                ("GET", "/readyz"),
                ("GET", "/v2/models/rf"),
                ("POST", "/v2/models/rf/infer"),
                ("POST", "/api/deploy"),
                ("GET", "/api/settings"),
            ]
            out: dict[str, list[int]] = {}
            for who, key in (
                ("none", None),
                ("read", READ),
                ("invoke", INVOKE),
                ("deploy", DEPLOY),
                ("admin", ADMIN),
            ):
                headers = {"authorization": f"Bearer {key}"} if key else {}
                out[who] = [
                    (await http.request(m, p, json={}, headers=headers)).status_code
                    for m, p in routes
                ]
            out["health"] = [
                (await http.get(p)).status_code for p in ("/healthz", "/v2/health/live")
            ]
            return out

    got = run(go())
    assert got["none"] == [401] * 7
    assert got["read"] == [200, 200, 200, 200, 403, 403, 403]
    assert got["invoke"] == [403, 403, 200, 200, 200, 403, 403]
    assert got["deploy"] == [200, 200, 200, 200, 403, 200, 403]
    assert got["admin"] == [200] * 7
    assert got["health"] == [200, 200]


def test_failed_authentications_are_audited_and_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> tuple[list[int], httpx.Response, int]:
        async with client(keyed()) as http:
            codes = [
                (
                    await http.get("/api/models", headers={"x-api-key": f"guess-{i}-0123456789"})
                ).status_code
                for i in range(5)
            ]
            blocked = await http.get("/api/models", headers={"authorization": f"Bearer {ADMIN}"})
            health = (await http.get("/healthz")).status_code
            return codes, blocked, health

    with caplog.at_level(logging.INFO, logger="zeroserve.audit"):
        codes, blocked, health = run(go())
    assert codes == [403] * 5
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) >= 1
    assert health == 200
    failures = [r for r in caplog.records if r.getMessage() == "authentication failed"]
    assert len(failures) == 5
    assert all(r.__dict__["client"] == "10.1.2.3" for r in failures)
    assert not any("guess-" in str(r.__dict__) for r in caplog.records)  # keys never logged


def test_admin_actions_get_an_audit_line_without_the_key(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> int:
        async with client(keyed()) as http:
            await http.get("/api/models", headers={"authorization": f"Bearer {ADMIN}"})
            r = await http.post(
                "/api/deploy", json={"model": "m"}, headers={"authorization": f"Bearer {DEPLOY}"}
            )
            return r.status_code

    with caplog.at_level(logging.INFO, logger="zeroserve.audit"):
        assert run(go()) == 200
    calls = [r for r in caplog.records if r.getMessage() == "control API call"]
    assert len(calls) == 1  # reads are not audited
    record = calls[0].__dict__
    assert (record["method"], record["path"], record["status"]) == ("POST", "/api/deploy", 200)
    assert record["key"].startswith("key:") and DEPLOY not in str(record)


def test_weak_keys_are_refused_at_start() -> None:
    for keys in ([" "], ["a"], [""], ["short-key"], ["has a space in it 0123"]):
        with pytest.raises(ValueError, match="shorter than 16 characters or with spaces"):
            Settings(api_keys=keys)
    with pytest.raises(ValueError, match="ZEROSERVE_ADMIN_API_KEYS"):
        Settings(admin_api_keys=["x"])


def test_unsupported_content_type_and_encoding_get_415() -> None:
    async def go() -> list[int]:
        async with client(Settings()) as http:
            infer = "/v1/endpoints/rf/invocations"
            return [
                (
                    await http.post(infer, content=b"{}", headers={"content-type": "text/plain"})
                ).status_code,
                (
                    await http.post(
                        infer,
                        content=b"{}",
                        headers={"content-type": "application/x-www-form-urlencoded"},
                    )
                ).status_code,
                (
                    await http.post(infer, content=b"{}", headers={"content-encoding": "gzip"})
                ).status_code,
                (
                    await http.post(
                        infer,
                        content=b"{}",
                        headers={"content-type": "application/json; charset=utf-8"},
                    )
                ).status_code,
                (await http.post(infer, content=b"{}")).status_code,
                (
                    await http.post(
                        "/v2/models/rf/infer",
                        content=b"{}",
                        headers={"content-type": "application/octet-stream"},
                    )
                ).status_code,
                (
                    await http.post(
                        "/api/deploy",
                        content=b"<x/>",
                        headers={"content-type": "application/xml", "x-zeroserve-client": "t"},
                    )
                ).status_code,
            ]

    assert run(go()) == [415, 415, 415, 200, 200, 200, 415]


def test_request_rate_limits_answer_429_with_retry_after() -> None:
    async def go() -> tuple[list[int], str, list[int]]:
        async with client(Settings(key_rate_limit_rps=2)) as http:
            codes = [(await http.get("/api/models")).status_code for _ in range(3)]
            last = await http.get("/api/models")
        async with client(Settings(rate_limit_rps=1)) as http:
            glob = [(await http.get("/api/models")).status_code for _ in range(2)]
            glob.append((await http.get("/healthz")).status_code)  # probes are never limited
        return codes, last.headers.get("retry-after", ""), glob

    codes, retry_after, glob = run(go())
    assert codes == [200, 200, 429]
    assert retry_after.isdigit() and int(retry_after) >= 1
    assert glob == [200, 429, 200]


def test_body_bytes_in_flight_have_a_global_budget() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    class Slow(Stub):
        async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            started.set()
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    settings = Settings(max_inflight_mb=1)

    async def go() -> tuple[int, int, int]:
        async with client(settings, Slow()) as http:
            first = asyncio.create_task(
                http.post("/v1/endpoints/a/invocations", content=b"x" * 700_000)
            )
            await started.wait()
            second = await http.post("/v1/endpoints/a/invocations", content=b"x" * 700_000)
            release.set()
            done = await first
            third = await http.post("/v1/endpoints/a/invocations", content=b"x" * 700_000)
            return done.status_code, second.status_code, third.status_code

    assert run(go()) == (200, 503, 200)


def test_a_weak_key_error_is_one_line_without_the_keys() -> None:
    from zeroserve.settings import settings_error

    with pytest.raises(ValueError) as caught:
        Settings(api_keys=["tiny-secret"], admin_api_keys=["another-long-admin-key"])
    message = settings_error(caught.value)
    assert "\n" not in message
    assert message.startswith("ZEROSERVE_API_KEYS holds a key shorter than 16")
    assert "tiny-secret" not in message and "another-long-admin-key" not in message


def test_uploads_that_stream_to_disk_are_outside_the_body_budget() -> None:
    settings = Settings(max_inflight_mb=1)
    big = b"x" * 1_500_000

    async def go() -> list[int]:
        async with client(settings) as http:
            return [
                (await http.post("/v1/endpoints/a/invocations", content=big)).status_code,
                (await http.post("/v1/endpoints/a/async", content=big)).status_code,
                (
                    await http.post(
                        "/api/models/m/versions",
                        files={"file": ("m.onnx", big)},
                        headers={"x-zeroserve-client": "t"},
                    )
                ).status_code,
            ]

    assert run(go()) == [413, 200, 200]

"""Signed webhook deliveries with retries.

Each delivery is a row (``WebhookRow``) written when its job finishes, so a
restart resumes the pending ones. The body is signed with HMAC-SHA256 under a
per-endpoint secret; receivers check ``X-Zeroserve-Signature``:

    t=<unix seconds>,v1=<hex of HMAC-SHA256(secret, f"{t}.{body}")>

Delivery is at least once (a crash between sending and recording resends);
the body carries the job id for the receiver to deduplicate.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from zeroserve.egress import EgressPolicy
from zeroserve.errors import ZeroserveError
from zeroserve.jobs.tables import WebhookRow

log = logging.getLogger("zeroserve.webhooks")

MAX_ATTEMPTS = 6
BACKOFF_BASE_S = 1.0
TIMEOUT_S = 5.0
SIGNATURE_HEADER = "X-Zeroserve-Signature"
# What a job's status says about a failed attempt. Never the receiver's answer
# or the connection error: those would make webhooks a port scanner.
DELIVERY_FAILED = "delivery failed; the server log has the details"
REFUSED = "the target is not allowed by the server's egress policy"


def load_master_secret(data_dir: Path) -> bytes:
    """The server's webhook master secret, created once and kept in the data dir."""
    path = data_dir / "webhook.secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip().encode()


def endpoint_secret(master: bytes, endpoint: str) -> str:
    return hmac.new(master, f"endpoint:{endpoint}".encode(), hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, body: bytes, header: str, tolerance_s: float = 300.0) -> bool:
    """What a receiver does: check the signature and that it is recent."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)


class WebhookSender:
    def __init__(
        self, sessions: sessionmaker[Session], master: bytes, policy: EgressPolicy
    ) -> None:
        self.sessions = sessions
        self.master = master
        self.policy = policy
        self._client: httpx.AsyncClient | None = None
        self.delivered = 0
        self.failed_attempts = 0

    def enqueue(self, job_id: str, endpoint: str, url: str, body: str) -> None:
        with self.sessions.begin() as s:
            if s.get(WebhookRow, job_id) is None:
                s.add(
                    WebhookRow(
                        job_id=job_id,
                        endpoint=endpoint,
                        url=url,
                        body=body,
                        next_attempt_at=time.time(),
                    )
                )

    def status(self, job_id: str) -> dict[str, Any] | None:
        with self.sessions.begin() as s:
            row = s.get(WebhookRow, job_id)
            if row is None:
                return None
            return {
                "url": row.url,
                "status": row.status,
                "attempts": row.attempts,
                "last_error": row.last_error,
                "delivered_at": row.delivered_at,
            }

    def forget(self, job_ids: list[str]) -> None:
        """Delete the delivery rows of purged jobs."""
        with self.sessions.begin() as s:
            s.execute(delete(WebhookRow).where(WebhookRow.job_id.in_(job_ids)))

    def purge(self, before: float) -> int:
        """Delete finished deliveries (delivered or failed) last tried before ``before``."""
        with self.sessions.begin() as s:
            result = s.execute(
                delete(WebhookRow).where(
                    WebhookRow.status != "pending", WebhookRow.next_attempt_at < before
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def _due(self, now: float, limit: int = 32) -> list[WebhookRow]:
        with self.sessions.begin() as s:
            rows = s.scalars(
                select(WebhookRow)
                .where(
                    WebhookRow.status == "pending",
                    WebhookRow.next_attempt_at <= now,
                )
                .order_by(WebhookRow.next_attempt_at)
                .limit(limit)
            ).all()
            s.expunge_all()
            return list(rows)

    def _record(self, job_id: str, error: str | None, final: bool = False) -> None:
        now = time.time()
        with self.sessions.begin() as s:
            row = s.get(WebhookRow, job_id)
            if row is None:
                return
            row.attempts += 1
            if error is None:
                row.status, row.delivered_at, row.last_error = "delivered", now, None
            else:
                row.last_error = error
                if final or row.attempts >= MAX_ATTEMPTS:
                    row.status = "failed"
                else:
                    row.next_attempt_at = now + BACKOFF_BASE_S * 2 ** (row.attempts - 1)

    async def deliver_due(self) -> int:
        """Send the deliveries that are due; returns how many were attempted."""
        rows = await asyncio.to_thread(self._due, time.time())
        if not rows:
            return 0
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=TIMEOUT_S, follow_redirects=False, trust_env=False
            )
        await asyncio.gather(*(self._send(row) for row in rows))
        return len(rows)

    async def _send(self, row: WebhookRow) -> None:
        assert self._client is not None
        body = row.body.encode()
        secret = endpoint_secret(self.master, row.endpoint)
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: sign(secret, body, int(time.time())),
            "user-agent": "zeroserve-webhooks",
        }
        error: str | None = None
        try:
            # Resolved and checked now, not at submit: the answer may have changed.
            target = await asyncio.to_thread(self.policy.http_target, row.url)
        except ZeroserveError as exc:
            log.warning(
                "webhook refused",
                extra={"job_id": row.job_id, "url": row.url, "error": exc.message},
            )
            self.failed_attempts += 1
            await asyncio.to_thread(self._record, row.job_id, REFUSED, True)
            return
        try:
            response = await self._client.post(
                target.url,
                content=body,
                headers={**headers, **target.headers},
                extensions=target.extensions,
            )
            if response.status_code >= 300:
                error = f"receiver answered {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        if error is None:
            self.delivered += 1
        else:
            self.failed_attempts += 1
            log.warning(
                "webhook delivery failed",
                extra={"job_id": row.job_id, "url": row.url, "error": error},
            )
        await asyncio.to_thread(
            self._record, row.job_id, None if error is None else DELIVERY_FAILED
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

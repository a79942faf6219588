"""The one atomic store for keys, budgets, reservations and usage rows.

Budgets hold by construction: a call first *reserves* its worst case with a conditional
``UPDATE ... WHERE spent + reserved + amount <= budget`` (key and team in one
transaction; SQLite takes the write lock up front with ``BEGIN IMMEDIATE``), then
*settles* on the reported usage, which moves the amount from reserved to spent. Several
gateway processes share the SQLite file (or a PostgreSQL database), so no interleaving
can overrun a budget. A reservation whose process died is settled at its full amount
(marked estimated) once it is older than the longest request could be.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)

from zeroserve.errors import Forbidden, NotFound, TooManyRequests, require

KEY_PREFIX = "zsk-"
meta = MetaData()

keys_table = Table(
    "llm_keys",
    meta,
    Column("id", String(32), primary_key=True),
    Column("digest", String(64), unique=True, nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    Column("team", String(200), nullable=True),
    Column("budget_micros", BigInteger, nullable=True),
    Column("spent_micros", BigInteger, nullable=False, default=0),
    Column("reserved_micros", BigInteger, nullable=False, default=0),
    Column("rpm", Integer, nullable=True),
    Column("tpm", Integer, nullable=True),
    Column("models", Text, nullable=True),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
)
teams_table = Table(
    "llm_teams",
    meta,
    Column("team", String(200), primary_key=True),
    Column("budget_micros", BigInteger, nullable=True),
    Column("spent_micros", BigInteger, nullable=False, default=0),
    Column("reserved_micros", BigInteger, nullable=False, default=0),
)
reservations_table = Table(
    "llm_reservations",
    meta,
    Column("id", String(40), primary_key=True),
    Column("key_id", String(32), nullable=False),
    Column("team", String(200), nullable=True),
    Column("amount_micros", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False, index=True),
)
usage_table = Table(
    "llm_usage",
    meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False, index=True),
    Column("request_id", String(40), nullable=False),
    Column("key_id", String(32), nullable=False, index=True),
    Column("team", String(200), nullable=True),
    Column("model", String(200), nullable=False),
    Column("deployment", String(200), nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cache_read_tokens", BigInteger, nullable=False),
    Column("cache_write_tokens", BigInteger, nullable=False),
    Column("compute_us", BigInteger, nullable=False),
    Column("cost_micros", BigInteger, nullable=False),
    Column("estimated", Boolean, nullable=False),
    Column("cache_hit", Boolean, nullable=False),
    Column("status", String(20), nullable=False),
)
state_table = Table(
    "llm_state", meta, Column("name", String(64), primary_key=True), Column("value", Text)
)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    name: str
    prefix: str
    team: str | None
    budget_micros: int | None
    spent_micros: int
    reserved_micros: int
    rpm: int | None
    tpm: int | None
    models: tuple[str, ...] | None
    revoked: bool
    created_at: float

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "team": self.team,
            "budget_usd": None if self.budget_micros is None else self.budget_micros / 1e6,
            "budget_micros": self.budget_micros,
            "spent_micros": self.spent_micros,
            "reserved_micros": self.reserved_micros,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "models": list(self.models) if self.models is not None else None,
            "revoked": self.revoked,
            "created_at": self.created_at,
        }


@dataclass(slots=True)
class Settlement:
    reservation_id: str | None
    key_id: str
    team: str | None
    reserved_micros: int
    row: dict[str, Any]
    """A ``llm_usage`` row; its ``cost_micros`` moves from reserved to spent."""


class BudgetExceeded(TooManyRequests):
    code = "budget_exceeded"

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after_s=60.0)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql"):
        require("psycopg", "postgres")
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True, pool_size=4)


class Ledger:
    """Blocking calls; the gateway runs them on one worker thread per process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        meta.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # keys
    def create_key(
        self,
        name: str,
        team: str | None = None,
        budget_micros: int | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        models: list[str] | None = None,
    ) -> tuple[KeyRecord, str]:
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = "key_" + secrets.token_hex(6)
        row = {
            "id": key_id,
            "digest": digest(secret),
            "prefix": secret[: len(KEY_PREFIX) + 6],
            "name": name,
            "team": team,
            "budget_micros": budget_micros,
            "spent_micros": 0,
            "reserved_micros": 0,
            "rpm": rpm,
            "tpm": tpm,
            "models": json.dumps(models) if models is not None else None,
            "revoked": False,
            "created_at": time.time(),
        }
        with self.engine.begin() as conn:
            conn.execute(insert(keys_table).values(**row))
            if team is not None:
                exists = conn.execute(
                    select(teams_table.c.team).where(teams_table.c.team == team)
                ).first()
                if exists is None:
                    conn.execute(
                        insert(teams_table).values(team=team, spent_micros=0, reserved_micros=0)
                    )
        return _key(row), secret

    def set_team_budget(self, team: str, budget_micros: int | None) -> None:
        with self.engine.begin() as conn:
            done = conn.execute(
                update(teams_table)
                .where(teams_table.c.team == team)
                .values(budget_micros=budget_micros)
            )
            if done.rowcount == 0:
                conn.execute(
                    insert(teams_table).values(
                        team=team, budget_micros=budget_micros, spent_micros=0, reserved_micros=0
                    )
                )

    def list_keys(self) -> list[KeyRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(keys_table).order_by(keys_table.c.created_at)).mappings()
            return [_key(dict(r)) for r in rows]

    def keys_by_digest(self) -> dict[str, KeyRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(keys_table)).mappings()
            return {r["digest"]: _key(dict(r)) for r in rows}

    def revoke(self, ref: str) -> KeyRecord:
        with self.engine.begin() as conn:
            cond = or_(keys_table.c.id == ref, keys_table.c.prefix == ref, keys_table.c.name == ref)
            rows = conn.execute(select(keys_table).where(cond)).mappings().all()
            if not rows:
                raise NotFound(f"no LLM key {ref!r}; list them with `zeroserve llm keys list`")
            if len(rows) > 1:
                raise NotFound(f"{ref!r} names {len(rows)} keys; revoke by id")
            conn.execute(
                update(keys_table).where(keys_table.c.id == rows[0]["id"]).values(revoked=True)
            )
            return _key({**rows[0], "revoked": True})

    # budgets
    def reserve(self, key_id: str, team: str | None, amount: int, reservation_id: str) -> None:
        """Hold ``amount`` against the key's and team's budgets, or raise ``BudgetExceeded``."""
        k = keys_table.c
        t = teams_table.c
        with self.engine.begin() as conn:
            done = conn.execute(
                update(keys_table)
                .where(
                    and_(
                        k.id == key_id,
                        k.revoked.is_(False),
                        or_(
                            k.budget_micros.is_(None),
                            k.spent_micros + k.reserved_micros + amount <= k.budget_micros,
                        ),
                    )
                )
                .values(reserved_micros=k.reserved_micros + amount)
            )
            if done.rowcount != 1:
                row = conn.execute(select(keys_table).where(k.id == key_id)).mappings().first()
                if row is None or row["revoked"]:
                    raise Forbidden("this API key has been revoked; ask for a new one")
                left = row["budget_micros"] - row["spent_micros"] - row["reserved_micros"]
                raise BudgetExceeded(
                    f"key budget exhausted: this call may cost up to ${amount / 1e6:.6f} and "
                    f"${max(left, 0) / 1e6:.6f} is left; lower max_tokens or raise the budget"
                )
            if team is not None:
                done = conn.execute(
                    update(teams_table)
                    .where(
                        and_(
                            t.team == team,
                            or_(
                                t.budget_micros.is_(None),
                                t.spent_micros + t.reserved_micros + amount <= t.budget_micros,
                            ),
                        )
                    )
                    .values(reserved_micros=t.reserved_micros + amount)
                )
                if done.rowcount != 1:
                    conn.rollback()
                    raise BudgetExceeded(
                        f"team {team!r} budget exhausted: this call may cost up to "
                        f"${amount / 1e6:.6f}; lower max_tokens or raise the team budget"
                    )
            conn.execute(
                insert(reservations_table).values(
                    id=reservation_id,
                    key_id=key_id,
                    team=team,
                    amount_micros=amount,
                    created_at=time.time(),
                )
            )

    def settle(self, items: list[Settlement]) -> None:
        """Move each reservation to spent at its real cost and write its usage row, atomically.

        One transaction for the batch, one UPDATE per key and team touched: the write-behind
        flush costs about the same for one call as for a hundred.
        """
        if not items:
            return
        k = keys_table.c
        t = teams_table.c
        r = reservations_table.c
        with self.engine.begin() as conn:
            ids = [s.reservation_id for s in items if s.reservation_id is not None]
            live: set[str] = set()
            if ids:
                live = {row[0] for row in conn.execute(select(r.id).where(r.id.in_(ids)))}
                conn.execute(delete(reservations_table).where(r.id.in_(list(live))))
            per_key: dict[str, list[int]] = {}
            per_team: dict[str, list[int]] = {}
            rows = []
            for s in items:
                if s.reservation_id is not None and s.reservation_id not in live:
                    continue  # swept already: it was spent at its full amount
                held = s.reserved_micros if s.reservation_id is not None else 0
                cost = int(s.row["cost_micros"])
                acc = per_key.setdefault(s.key_id, [0, 0])
                acc[0] += held
                acc[1] += cost
                if s.team is not None:
                    tacc = per_team.setdefault(s.team, [0, 0])
                    tacc[0] += held
                    tacc[1] += cost
                rows.append(s.row)
            for key_id, (held, cost) in per_key.items():
                conn.execute(
                    update(keys_table)
                    .where(k.id == key_id)
                    .values(
                        reserved_micros=k.reserved_micros - held, spent_micros=k.spent_micros + cost
                    )
                )
            for team, (held, cost) in per_team.items():
                conn.execute(
                    update(teams_table)
                    .where(t.team == team)
                    .values(
                        reserved_micros=t.reserved_micros - held, spent_micros=t.spent_micros + cost
                    )
                )
            if rows:
                conn.execute(insert(usage_table), rows)

    def sweep(self, older_than_s: float) -> int:
        """Settle reservations left by a dead process at their full amount (estimated)."""
        cutoff = time.time() - older_than_s
        with self.engine.connect() as conn:
            stale = (
                conn.execute(
                    select(reservations_table).where(reservations_table.c.created_at < cutoff)
                )
                .mappings()
                .all()
            )
        items = [
            Settlement(
                None,
                r["key_id"],
                r["team"],
                0,
                usage_row(
                    r["id"],
                    r["key_id"],
                    r["team"],
                    "?",
                    "?",
                    0,
                    0,
                    0,
                    0,
                    0,
                    int(r["amount_micros"]),
                    True,
                    False,
                    "lost",
                ),
            )
            for r in stale
        ]
        if not items:
            return 0
        k = keys_table.c
        t = teams_table.c
        with self.engine.begin() as conn:
            for s, r in zip(items, stale, strict=True):
                gone = conn.execute(
                    delete(reservations_table).where(reservations_table.c.id == r["id"])
                )
                if gone.rowcount != 1:
                    continue
                amount = int(r["amount_micros"])
                conn.execute(
                    update(keys_table)
                    .where(k.id == s.key_id)
                    .values(
                        reserved_micros=k.reserved_micros - amount,
                        spent_micros=k.spent_micros + amount,
                    )
                )
                if s.team is not None:
                    conn.execute(
                        update(teams_table)
                        .where(t.team == s.team)
                        .values(
                            reserved_micros=t.reserved_micros - amount,
                            spent_micros=t.spent_micros + amount,
                        )
                    )
                conn.execute(insert(usage_table).values(**s.row))
        return len(items)

    # config generation, for reloads across gateway processes
    def generation(self) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(state_table.c.value).where(state_table.c.name == "config")
            ).first()
            return None if row is None else str(row[0])

    def bump_generation(self, value: str) -> None:
        with self.engine.begin() as conn:
            done = conn.execute(
                update(state_table).where(state_table.c.name == "config").values(value=value)
            )
            if done.rowcount == 0:
                conn.execute(insert(state_table).values(name="config", value=value))

    # usage
    def usage(
        self, by: str = "model", key: str | None = None, since: float | None = None
    ) -> list[dict[str, Any]]:
        u = usage_table.c
        if by == "model":
            group: list[Any] = [u.model, u.deployment]
        elif by == "key":
            group = [u.key_id]
        elif by == "day":
            group = [func.cast(u.ts / 86400, Integer).label("day")]
        else:
            raise NotFound(f"cannot group usage by {by!r}; use model, key or day")
        query = select(
            *group,
            func.count().label("requests"),
            func.sum(u.input_tokens).label("input_tokens"),
            func.sum(u.output_tokens).label("output_tokens"),
            func.sum(u.cache_read_tokens).label("cache_read_tokens"),
            func.sum(u.cache_write_tokens).label("cache_write_tokens"),
            func.sum(u.cost_micros).label("cost_micros"),
            func.sum(func.cast(u.estimated, Integer)).label("estimated"),
            func.sum(func.cast(u.cache_hit, Integer)).label("cache_hits"),
        ).group_by(*group)
        if key is not None:
            query = query.where(u.key_id == key)
        if since is not None:
            query = query.where(u.ts >= since)
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
        for r in rows:
            for name, value in list(r.items()):
                if name not in ("model", "deployment", "key_id") and value is not None:
                    r[name] = int(value)
            if by == "day":
                r["day"] = time.strftime("%Y-%m-%d", time.gmtime(r["day"] * 86400))
        return rows

    def rows(self, key: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query = select(usage_table).order_by(usage_table.c.id.desc()).limit(limit)
        if key is not None:
            query = query.where(usage_table.c.key_id == key)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]


def usage_row(
    request_id: str,
    key_id: str,
    team: str | None,
    model: str,
    deployment: str,
    input_tokens: int,
    output_tokens: int,
    cache_read: int,
    cache_write: int,
    compute_us: int,
    cost: int,
    estimated: bool,
    cache_hit: bool,
    status: str,
) -> dict[str, Any]:
    return {
        "ts": time.time(),
        "request_id": request_id,
        "key_id": key_id,
        "team": team,
        "model": model,
        "deployment": deployment,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_tokens": cache_read,
        "cache_write_tokens": cache_write,
        "compute_us": compute_us,
        "cost_micros": cost,
        "estimated": estimated,
        "cache_hit": cache_hit,
        "status": status,
    }


def _key(row: dict[str, Any]) -> KeyRecord:
    models = row.get("models")
    return KeyRecord(
        id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        team=row.get("team"),
        budget_micros=row.get("budget_micros"),
        spent_micros=int(row.get("spent_micros") or 0),
        reserved_micros=int(row.get("reserved_micros") or 0),
        rpm=row.get("rpm"),
        tpm=row.get("tpm"),
        models=tuple(json.loads(models)) if models else None,
        revoked=bool(row.get("revoked")),
        created_at=float(row["created_at"]),
    )

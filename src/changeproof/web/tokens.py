"""API tokens: shown once, stored as SHA-256, revocable, one scope each.

Scopes form a small lattice (docs/server.md): ``read`` reads; ``record`` and ``gate`` also read
(a pipeline that records or asks the gate may see what it wrote); ``admin`` may do everything,
including starting audits. Tokens are managed only from the command line.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa

from changeproof.errors import NotFoundError
from changeproof.store import Store, schema

Scope = Literal["read", "record", "gate", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "record", "gate", "admin")
PREFIX = "cpt_"

# what each scope may do, beyond itself
GRANTS: dict[str, frozenset[str]] = {
    "read": frozenset({"read"}),
    "record": frozenset({"read", "record"}),
    "gate": frozenset({"read", "gate"}),
    "admin": frozenset(SCOPES),
}


def allows(have: str, need: str) -> bool:
    return need in GRANTS.get(have, frozenset())


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    scope: str
    created_us: int
    last_used_us: int | None
    revoked_us: int | None

    @property
    def active(self) -> bool:
        return self.revoked_us is None


def create(store: Store, scope: Scope, name: str) -> tuple[int, str]:
    """A new token: returns (id, token). Only its SHA-256 is kept."""
    token = PREFIX + secrets.token_urlsafe(32)
    t = schema.api_tokens
    with store.writer() as w:
        res = w.conn.execute(
            sa.insert(t).values(
                name=name,
                scope=scope,
                token_sha256=digest(token),
                created_us=int(time.time() * 1_000_000),
            )
        )
        pk = res.inserted_primary_key
        assert pk is not None
        return int(pk[0]), token


def listing(store: Store) -> list[TokenInfo]:
    t = schema.api_tokens
    with store.connect() as conn:
        rows = conn.execute(sa.select(t).order_by(t.c.id)).all()
    return [
        TokenInfo(r.id, r.name, r.scope, r.created_us, r.last_used_us, r.revoked_us) for r in rows
    ]


def revoke(store: Store, token_id: int) -> TokenInfo:
    t = schema.api_tokens
    with store.writer() as w:
        row = w.conn.execute(sa.select(t).where(t.c.id == token_id)).first()
        if row is None:
            raise NotFoundError(
                f"no API token with id {token_id}",
                expected="an id from `changeproof token list`",
            )
        now = int(time.time() * 1_000_000)
        if row.revoked_us is None:
            w.conn.execute(sa.update(t).where(t.c.id == token_id).values(revoked_us=now))
        return TokenInfo(
            row.id, row.name, row.scope, row.created_us, row.last_used_us, row.revoked_us or now
        )


def lookup(store: Store, token: str) -> TokenInfo | None:
    """The active token with this value, or None. The hash is compared by the database
    index; the token itself is never stored, so there is nothing to compare in Python."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    t = schema.api_tokens
    with store.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.token_sha256 == digest(token))).first()
    if row is None or row.revoked_us is not None:
        return None
    return TokenInfo(row.id, row.name, row.scope, row.created_us, row.last_used_us, None)

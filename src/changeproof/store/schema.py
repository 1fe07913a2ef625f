"""Table definitions (SQLAlchemy Core). The Alembic migrations create exactly these.

Portable by construction: integer epoch microseconds for time (no dialect date quirks),
LargeBinary for bodies, no SQLite-only SQL. Evidence bodies are msgspec JSON of the frozen
records; a few columns are lifted out of the body for the queries that must be fast.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer, "sqlite")

evidence = Table(
    "evidence",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("key", String(512), nullable=False),
    Column("repo", String(256), nullable=True),
    Column("subject", String(512), nullable=True),
    Column("occurred_us", BigInteger, nullable=False),
    Column("collected_us", BigInteger, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("raw_sha256", String(64), nullable=False),
    Column("body", LargeBinary, nullable=False),
    UniqueConstraint("kind", "key", name="uq_evidence_kind_key"),
)
Index("ix_evidence_kind_repo_time", evidence.c.kind, evidence.c.repo, evidence.c.occurred_us)
Index("ix_evidence_kind_subject", evidence.c.kind, evidence.c.subject)

# Every landed commit → the change it is attributed to (for the gate's and audit's lookups).
commit_index = Table(
    "commit_index",
    metadata,
    Column("repo", String(256), primary_key=True),
    Column("sha", String(64), primary_key=True),
    Column("branch", String(256), nullable=False),
    Column("change_key", String(512), nullable=False),
    Column("seq", BigInteger, nullable=False),  # first-parent position, for "since last deploy"
)
Index("ix_commit_index_change", commit_index.c.change_key)
Index("ix_commit_index_seq", commit_index.c.repo, commit_index.c.branch, commit_index.c.seq)

locker_objects = Table(
    "locker_objects",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("media_type", String(64), nullable=False),
    Column("body", LargeBinary, nullable=False),
)

locker_entries = Table(
    "locker_entries",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("digest", String(64), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("source", String(64), nullable=False),
    Column("recorded_us", BigInteger, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False, unique=True),
)
Index("ix_locker_entries_digest", locker_entries.c.digest)

locker_checkpoints = Table(
    "locker_checkpoints",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("head_hash", String(64), nullable=False),
    Column("signed_us", BigInteger, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("signature", String(128), nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("started_us", BigInteger, nullable=False),
    Column("finished_us", BigInteger, nullable=True),
    Column("settings_digest", String(64), nullable=False),
    Column("scope", Text, nullable=False),
    Column("tool_version", String(32), nullable=False),
    Column("results_digest", String(64), nullable=True),
    Column("result_count", BigInteger, nullable=False, default=0),
    # (migration 0004) an unfinished run's writer ("host:pid") and the wall-clock time of
    # its last committed segment of results: finished_us NULL means readers ignore the run
    Column("owner", String(256), nullable=True),
    Column("beat_us", BigInteger, nullable=True),
)

# One row per subject and run: every result a run gave that subject (a change's nine, a
# record's one), as a canonical JSON array. A row per result made the store's writes most of
# a check's cost (nine rows, two index entries each, per change). ``outcomes`` lists the
# results' "CONTROL:outcome" tokens in order between single spaces (" CM-REV-1:pass … "), so
# filters by control or outcome need no body; ``worst`` is the worst of them.
result_groups = Table(
    "result_groups",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", BigInteger, nullable=False),
    Column("subject", String(512), nullable=False),
    Column("repo", String(256), nullable=True),
    Column("outcomes", Text, nullable=False),
    Column("worst", String(16), nullable=False),
    Column("n", Integer, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("body", LargeBinary, nullable=False),
)
Index("ix_result_groups_run_subject", result_groups.c.run_id, result_groups.c.subject)

collect_state = Table(
    "collect_state",
    metadata,
    Column("source", String(32), primary_key=True),
    Column("scope", String(512), primary_key=True),
    Column("cursor", Text, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    Column("complete", Boolean, nullable=False, default=True),
)

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# --- the server (changeproof serve): webhook deliveries and API tokens (migration 0002) ---

# One row per accepted webhook delivery, written in the same transaction as its raw envelope
# in the locker (before the 2xx). ``status`` is the processing queue: pending → done | error.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("source", String(16), nullable=False),  # github | gitlab
    Column("delivery_id", String(128), nullable=False),
    Column("event", String(64), nullable=False),
    Column("action", String(64), nullable=True),
    Column("repo", String(256), nullable=True),
    Column("received_us", BigInteger, nullable=False),
    Column("raw_sha256", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("processed_us", BigInteger, nullable=True),
    Column("recollect", Boolean, nullable=False, default=False),
    Column("detail", Text, nullable=True),
    UniqueConstraint("source", "delivery_id", name="uq_webhook_deliveries_source_id"),
)
Index("ix_webhook_deliveries_status", webhook_deliveries.c.status, webhook_deliveries.c.id)
Index("ix_webhook_deliveries_repo", webhook_deliveries.c.repo, webhook_deliveries.c.received_us)

# API tokens: only the SHA-256 of the token is stored; the token is shown once.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False),
    Column("scope", String(16), nullable=False),  # read | record | gate | admin
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_us", BigInteger, nullable=False),
    Column("last_used_us", BigInteger, nullable=True),
    Column("revoked_us", BigInteger, nullable=True),
)

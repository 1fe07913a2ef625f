"""runs: who is writing an unfinished run, and when it last committed results

A check commits its results in segments (so SQLite can checkpoint them as the run goes,
and other writers get turns). A run with ``finished_us`` still NULL is unfinished: readers
ignore it, and the next check removes it once its owner is gone (the process ``owner``
names has ended on this host, or ``beat_us`` is long past).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 14:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("beat_us", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    # what an older version could not tell from a finished run: drop the partial ones
    runs = sa.table("runs", sa.column("id"), sa.column("finished_us"))
    groups = sa.table("result_groups", sa.column("run_id"))
    unfinished = sa.select(runs.c.id).where(runs.c.finished_us.is_(None))
    op.execute(sa.delete(groups).where(groups.c.run_id.in_(unfinished)))
    op.execute(sa.delete(runs).where(runs.c.finished_us.is_(None)))
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("beat_us")
        batch_op.drop_column("owner")

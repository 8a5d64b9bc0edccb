"""The daily partitions of `executions`: created ahead and dropped past the retention, by the replicas.

`executions` is partitioned by RANGE on `scheduled_for`, one partition per UTC day, named
`executions_YYYYMMDD`, plus `executions_default` for any row no day covers (migration 0008 says why).
Every replica's housekeeping runs these steps every few minutes; each step is its own short
transaction under a transaction-level advisory lock (`pg_try_advisory_xact_lock`): a replica that
does not get it skips the step, since another one is doing it right now. Each step re-reads the
catalog once it holds the lock, so two replicas never create or drop the same partition.

Locks, and why they stay short:
- Creating: the new table is made on its own, then ATTACHed. ATTACH takes SHARE UPDATE EXCLUSIVE on
  `executions` (no conflict with reads or writes), ACCESS EXCLUSIVE on `executions_default` (it scans
  the default for rows the new day would own: kept empty, so the scan is one page), and SHARE ROW
  EXCLUSIVE on `strategies` and `strategy_status` while it adds the foreign keys' triggers. A session
  waiting for those makes later statements queue behind it, so `lock_timeout` is short: a step that
  cannot get its locks at once fails and is tried again at the next housekeeping, days ahead of need.
- Dropping: `DROP TABLE` of a partition takes ACCESS EXCLUSIVE on `executions` for the time it takes
  to unlink a file (the same short `lock_timeout`). Nothing references `executions` by a foreign key,
  so no row is checked; a key to a partitioned table would make each drop scan the whole day first.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

from sqlalchemy import TextClause, text

PARENT = "executions"
DEFAULT_PARTITION = "executions_default"

# An arbitrary constant that names "partition maintenance" among the advisory locks of this database.
PARTITION_LOCK = 7_301_946_113

# How far ahead days are created. A replica's housekeeping runs every few minutes, so a week gives
# thousands of chances before any day is needed; and a claim never inserts into a future day
# (ticks and requests are never later than now()).
DAYS_AHEAD = 7

# How long a maintenance step may wait for a lock before giving up until the next housekeeping.
LOCK_TIMEOUT = "500ms"

_NAME = re.compile(r"^executions_(\d{8})$")

TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(:key)")
SET_LOCK_TIMEOUT = text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")

# Today's date by the database clock, in UTC: every replica agrees on which days exist.
TODAY = text("SELECT (now() AT TIME ZONE 'UTC')::date")

# The partitions of `executions`, by name (the default among them).
LIST_PARTITIONS = text(
    """
    SELECT c.relname
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'executions'::regclass
    """
)

# Rows of a day that landed in the default partition (its day did not exist when they were inserted):
# attaching the day would fail, so the day is left to the default.
DEFAULT_HOLDS_DAY = text(
    f"""
    SELECT EXISTS (SELECT 1 FROM {DEFAULT_PARTITION} WHERE scheduled_for >= :low AND scheduled_for < :high)
    """
)

# Rows of the default partition past the retention (rows whose day had no partition), in batches.
PRUNE_DEFAULT = text(
    f"""
    DELETE FROM {DEFAULT_PARTITION}
    WHERE ctid IN (
        SELECT ctid FROM {DEFAULT_PARTITION}
        WHERE finished_at < now() - make_interval(secs => :retention_seconds)
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    )
    """
)

# Before a drop checks the day for executions in flight: no insert through `executions` (a claim of an
# old run request may land in an old day) can add one between the check and the drop. The parent only,
# first: the order every insert takes them in (parent, then the partition it routes to).
LOCK_PARENT = text(f"LOCK TABLE ONLY {PARENT} IN ACCESS EXCLUSIVE MODE")

# The cut-off of the retention by the database clock: a day whose end is before it may go.
RETENTION_CUTOFF = text("SELECT now() - make_interval(secs => :retention_seconds)")


def partition_name(day: date) -> str:
    return f"{PARENT}_{day:%Y%m%d}"


def day_of(name: str) -> date | None:
    """The day a partition's name says it holds; None for the default (or any table not ours)."""
    found = _NAME.match(name)
    if found is None:
        return None
    digits = found.group(1)
    return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))


def bounds(day: date) -> tuple[str, str]:
    """The day's range as UTC timestamps (written with their offset, so the session's TimeZone does not
    move them)."""
    return f"{day:%Y-%m-%d} 00:00:00+00", f"{day + timedelta(days=1):%Y-%m-%d} 00:00:00+00"


def create_partition(day: date) -> list[TextClause]:
    """The table made alone (columns, NOT NULLs, CHECKs and the generated column copied from the parent),
    then attached: ATTACH adds the indexes and foreign keys, and takes weaker locks than CREATE TABLE
    ... PARTITION OF, which would hold ACCESS EXCLUSIVE on `executions`."""
    name = partition_name(day)
    low, high = bounds(day)
    return [
        text(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)"),
        text(f"ALTER TABLE {PARENT} ATTACH PARTITION {name} FOR VALUES FROM ('{low}') TO ('{high}')"),
    ]


def running_in(day: date) -> TextClause:
    """Whether a day's partition holds an execution in flight (its partial index of running rows)."""
    return text(f"SELECT EXISTS (SELECT 1 FROM {partition_name(day)} WHERE status = 'running')")


def drop_partition(day: date) -> TextClause:
    return text(f"DROP TABLE {partition_name(day)}")

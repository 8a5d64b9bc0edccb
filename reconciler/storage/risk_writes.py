"""Writes of the risk guard shared by the broker and the replica store: a halt and an alert, each
inside a transaction the caller owns, so the halt, its alert and whatever caused them commit together."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from reconciler.risk import Breach, Resume
from reconciler.storage.statements import risk as queries


async def halt(conn: AsyncConnection, strategy_id: str, breach: Breach, resume: Resume) -> bool:
    """Halt a running strategy and enqueue its `halted` alert; False when it was not running."""
    row = (
        await conn.execute(
            queries.HALT_STRATEGY,
            {
                "strategy_id": strategy_id,
                "reason": f"halted by {breach.limit}: {breach.message}",
                "limit": breach.limit,
                "value": breach.value,
                "threshold": breach.threshold,
                "next_utc_day": resume.at_next_utc_day,
                "after_seconds": resume.after_seconds,
            },
        )
    ).first()
    if row is None:
        return False
    if row.resume_at is not None:
        await conn.execute(queries.NOTIFY_PAUSED, {"strategy_id": strategy_id})
    await enqueue_alert(
        conn,
        strategy_id,
        "halted",
        {
            "limit": breach.limit,
            "value": str(breach.value),
            "threshold": str(breach.threshold),
            "message": breach.message,
            "halted_at": row.halted_at.isoformat(),
            "resume_at": row.resume_at.isoformat() if row.resume_at is not None else None,
        },
    )
    return True


async def enqueue_alert(conn: AsyncConnection, strategy_id: str, event: str, payload: dict[str, Any]) -> int:
    """Put the event in the outbox for every webhook that wants it; how many deliveries that made."""
    body = {"strategy_id": strategy_id, **payload}
    rows = (
        await conn.execute(
            queries.ENQUEUE_ALERT,
            {"strategy_id": strategy_id, "event": event, "payload": json.dumps(body, sort_keys=True, default=str)},
        )
    ).all()
    if rows:
        # Delivered at commit: wakes the replicas' senders at once instead of at their next poll.
        await conn.execute(queries.NOTIFY_ALERT)
    return len(rows)

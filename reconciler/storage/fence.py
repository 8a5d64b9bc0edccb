"""The fencing token of one execution: what every statement recording one of its effects checks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID


@dataclass(frozen=True, slots=True)
class Fence:
    """An effect of `execution_id` is written only while the execution is still `running`, still owned
    by `replica_id`, still holds `token` and its lease has not expired (checked by the database).
    `scheduled_for` is the execution's partition key: statements that find it by id carry it, so
    PostgreSQL looks in one partition of `executions`."""

    execution_id: UUID
    strategy_id: str
    replica_id: str
    token: int
    scheduled_for: datetime


class Fenced(Exception):
    """The execution was fenced off (lease lost, marked lost, or its replica re-registered): the effect
    was not written, and nothing more of the execution may happen."""

    def __init__(self, fence: Fence, what: str) -> None:
        super().__init__(f"execution {fence.execution_id} is fenced off: {what} not recorded")
        self.fence = fence

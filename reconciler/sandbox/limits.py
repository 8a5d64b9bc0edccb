"""Per-execution limits of the sandbox, read from the settings in exactly one place."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the zygote and the child must never import the settings (they hold secrets)
    from reconciler.settings import Settings


@dataclass(frozen=True)
class SandboxLimits:
    memory_mb: int = 100
    cpu_seconds: int = 30
    wall_seconds: float = 60.0
    output_bytes: int = 65536
    result_bytes: int = 65536
    state_bytes: int = 65536
    sandbox_uid_base: int = 1_900_000_000

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxLimits:
        return cls(
            memory_mb=settings.max_memory_mb,
            cpu_seconds=settings.max_cpu_time_seconds,
            wall_seconds=settings.max_wall_time_seconds,
            output_bytes=settings.max_output_bytes,
            result_bytes=settings.max_result_bytes,
            state_bytes=settings.max_state_bytes,
            sandbox_uid_base=settings.sandbox_uid_base,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

"""Compiling off the event loop: a small pool of compile worker processes (`reconciler.policy.worker`).

    pool = CompilePool(CompileLimits.from_settings(settings))
    await pool.check(code)          # raises PolicyError (line, column), as compile_strategy would
    data = await pool.compile(code)  # the marshalled code object
    await pool.close()

Each request takes one idle worker (at most `workers` run at once; the others wait their turn, and
the time limit counts only the worker's own CPU time, so waiting or a busy host never turns valid
code into "too long"). A worker that does not answer within a generous wall-clock bound, or whose
caller gives up, is killed and replaced. Workers belong to the event loop that started them: a pool
used from another loop (a test client's) starts fresh ones there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import reconciler
from reconciler.policy.errors import PolicyError
from reconciler.policy.worker import too_long_message

log = logging.getLogger(__name__)
_LENGTH = struct.Struct(">I")


class CompileSettings(Protocol):
    """What this module reads of `reconciler.settings.Settings`, which it does not import: the sandbox
    imports this module, and nothing beside user code may load the settings."""

    # Read-only (properties): the frozen Settings object matches.
    @property
    def compile_timeout_seconds(self) -> float: ...
    @property
    def max_compiled_bytes(self) -> int: ...
    @property
    def compile_workers(self) -> int: ...


@dataclass(frozen=True, slots=True)
class CompileLimits:
    """COMPILE_TIMEOUT_SECONDS, MAX_COMPILED_BYTES and COMPILE_WORKERS."""

    cpu_seconds: float = 10.0  # CPU time one compile may take before "code takes too long to compile"
    max_compiled_bytes: int = 8 << 20  # the marshalled code object
    workers: int = 2
    memory_bytes: int = 2 << 30  # address space of a worker

    @classmethod
    def from_settings(cls, settings: CompileSettings) -> CompileLimits:
        return cls(
            cpu_seconds=settings.compile_timeout_seconds,
            max_compiled_bytes=settings.max_compiled_bytes,
            workers=settings.compile_workers,
        )

    @property
    def wall_seconds(self) -> float:
        # The CPU limit is the real bound; this one only catches a worker stuck inside one long C
        # call (signals wait for it) or starved on a host far beyond capacity.
        return self.cpu_seconds * 3 + 10


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def ask(self, mode: str, source: bytes) -> tuple[dict[str, Any], bytes]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        header = json.dumps({"mode": mode}).encode()
        stdin.write(_LENGTH.pack(len(header)) + header + _LENGTH.pack(len(source)) + source)
        await stdin.drain()
        answer = json.loads(await _read_frame(stdout))
        return answer, await _read_frame(stdout)

    def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()


async def _read_frame(stream: asyncio.StreamReader) -> bytes:
    (length,) = _LENGTH.unpack(await stream.readexactly(_LENGTH.size))
    return await stream.readexactly(length)


def _worker_environment() -> dict[str, str]:
    """Nothing of the service's environment (no DATABASE_URL, no keys): only what Python needs."""
    root = str(Path(reconciler.__file__).resolve().parents[1])
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": root,
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
    }


class CompilePool:
    def __init__(self, limits: CompileLimits | None = None) -> None:
        self.limits = limits or CompileLimits()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._turns: asyncio.Semaphore | None = None
        self._reaping: set[asyncio.Future[int]] = set()

    async def check(self, code: str) -> None:
        """Raise PolicyError if `code` does not compile under the policy or breaks a limit."""
        await self._ask("check", code)

    async def compile(self, code: str) -> bytes:
        """The marshalled code object of `code`; PolicyError as `check`."""
        return await self._ask("compile", code)

    async def _ask(self, mode: str, code: str) -> bytes:
        turns = self._bind()
        source = code.encode("utf-8", "surrogatepass")
        async with turns:
            worker = self._idle.pop() if self._idle else await self._spawn()
            self._busy.add(worker)
            keep = False
            try:
                answer, data = await asyncio.wait_for(worker.ask(mode, source), self.limits.wall_seconds)
                keep = not answer.get("exiting")
            except TimeoutError:
                raise PolicyError(too_long_message(self.limits.cpu_seconds)) from None
            except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError) as exc:
                log.warning("a compile worker ended without answering: %r", exc)
                raise PolicyError("the code could not be compiled: the compiler ran out of resources") from None
            finally:
                self._busy.discard(worker)
                if keep and worker.process.returncode is None:
                    self._idle.append(worker)
                else:  # timed out, cancelled, exiting or gone: never reuse a worker in an unknown state
                    worker.kill()
                    reaping = asyncio.ensure_future(worker.process.wait())  # closes its pipes once it exits
                    self._reaping.add(reaping)
                    reaping.add_done_callback(self._reaping.discard)
        if not answer.get("ok"):
            raise PolicyError(str(answer.get("message")), answer.get("line"), answer.get("column"))
        return data

    def _bind(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._turns is None:
            self._discard_all()
            self._reaping = set()  # the old loop's: it reaps them, if it still runs
            self._loop, self._turns = loop, asyncio.Semaphore(self.limits.workers)
        return self._turns

    async def _spawn(self) -> _Worker:
        limits = {
            "cpu_seconds": self.limits.cpu_seconds,
            "max_bytes": self.limits.max_compiled_bytes,
            "memory_bytes": self.limits.memory_bytes,
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",
            "-s",
            "-m",
            "reconciler.policy.worker",
            json.dumps(limits),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=_worker_environment(),
            cwd="/",
        )
        return _Worker(process)

    def _discard_all(self) -> None:
        for worker in [*self._idle, *self._busy]:
            worker.kill()
        self._idle.clear()
        self._busy.clear()

    async def close(self) -> None:
        workers = [*self._idle, *self._busy]
        self._discard_all()
        for worker in workers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker.process.wait(), 5)
        if self._reaping:
            await asyncio.wait(self._reaping, timeout=5)

"""The replica's handle on its zygote: spawning it, its control socket, and reading what it reports.

Runs in the replica's event loop. The zygote is trusted (no user code runs in it); this module knows
nothing of strategies, only of child processes: ask for one (`spawn_child`, with the execution's end
of a socketpair), kill one, and learn how each ended (`exited`).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import logging
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import reconciler
from reconciler.sandbox.classify import ExitInfo

logger = logging.getLogger(__name__)

READY_TIMEOUT = 120.0
_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


# The zygote's heap on transparent huge pages where the host allows them (THP "madvise" or
# "always"; elsewhere this changes nothing): every Python object in glibc's heap (PYTHONMALLOC=malloc,
# instead of CPython's own 1 MiB arenas, which are never aligned to a huge page), and that heap
# advised as huge pages (glibc.malloc.hugetlb=1). A clone then copies one page-table entry per 2 MiB
# the template never wrote instead of 512, and a child's exit unmaps as many fewer. See the README's
# sandbox profile for what it saves.
_MEMORY_VARIABLES = {"PYTHONMALLOC": "malloc", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


class ZygoteDied(Exception):
    pass


def project_root() -> str:
    return str(Path(reconciler.__file__).resolve().parents[1])


def scrubbed_environment() -> dict[str, str]:
    """The zygote's whole environment: no DATABASE_URL, no keys, no tokens; only what Python needs."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": project_root(),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "HOME": "/nonexistent",
        "LANG": "C.UTF-8",
        "TZ": "UTC",
    }
    for name in _THREAD_VARIABLES:
        env[name] = "1"
    env.update(_MEMORY_VARIABLES)
    return env


@dataclass
class ZygoteClient:
    """One running zygote. Create with `await ZygoteClient.spawn(config)`; `close()` ends it."""

    process: asyncio.subprocess.Process
    control: socket.socket
    layers: dict[str, bool] = field(default_factory=dict)
    alive: bool = True
    _exits: dict[int, asyncio.Future[ExitInfo]] = field(default_factory=dict)
    _ready: asyncio.Future[dict[str, Any]] | None = None
    _reader: asyncio.Task[None] | None = None
    _status_waiters: list[asyncio.Future[dict[str, Any]]] = field(default_factory=list)

    @classmethod
    async def spawn(cls, config: dict[str, Any]) -> ZygoteClient:
        """Start `python -m reconciler.sandbox.zygote` with a scrubbed environment; wait until it is ready.

        `config` is the zygote's command line, minus the control socket (added here). Raises
        RuntimeError when the zygote cannot start.
        """
        loop = asyncio.get_running_loop()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        mine.setblocking(False)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-P",
                "-s",
                "-m",
                "reconciler.sandbox.zygote",
                json.dumps({**config, "control_fd": theirs.fileno()}),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                env=scrubbed_environment(),
                cwd="/",
            )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        zygote = cls(process=process, control=mine, _ready=loop.create_future())
        zygote._reader = asyncio.create_task(zygote._read())
        try:
            ready = await asyncio.wait_for(asyncio.shield(zygote._ready), READY_TIMEOUT)  # type: ignore[arg-type]
        except (TimeoutError, ZygoteDied) as exc:
            await zygote.close()
            raise RuntimeError(f"the sandbox zygote did not start: {exc!r}") from None
        zygote.layers = {str(k): bool(v) for k, v in ready.get("layers", {}).items()}
        return zygote

    @property
    def pid(self) -> int:
        return self.process.pid

    # -- requests -------------------------------------------------------------------------------------

    async def spawn_child(self, run_id: int, fd: int) -> asyncio.Future[ExitInfo]:
        """Ask for a confined child serving the execution on `fd` (the zygote gets its own copy of the
        descriptor; the caller still closes its own). The future resolves when the zygote reaps it."""
        exited: asyncio.Future[ExitInfo] = asyncio.get_running_loop().create_future()
        self._exits[run_id] = exited
        try:
            await self._send({"op": "spawn", "id": run_id}, fd)
        except BaseException:
            self._exits.pop(run_id, None)
            raise
        return exited

    def forget(self, run_id: int) -> None:
        """The caller no longer waits for this child's exit (it ended, or the run gave up on it)."""
        self._exits.pop(run_id, None)

    async def kill(self, run_id: int) -> None:
        """SIGKILL the child of `run_id`, if it still runs (the zygote alone signals its children)."""
        await self._send({"op": "kill", "id": run_id})

    async def status(self) -> dict[str, Any]:
        """What the zygote holds right now: ids of running executions, pids of pre-forked children."""
        if not self.alive:
            raise ZygoteDied("no live sandbox zygote")
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._status_waiters.append(waiter)
        await self._send({"op": "status"})
        return await asyncio.wait_for(waiter, 10)

    async def _send(self, message: dict[str, Any], fd: int | None = None) -> None:
        payload = [json.dumps(message).encode()]
        ancillary = [] if fd is None else [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
        while True:
            try:
                self.control.sendmsg(payload, ancillary)
                return
            except BlockingIOError:  # the zygote drains continuously; a full buffer is momentary
                await asyncio.sleep(0.001)
            except OSError as exc:
                raise ZygoteDied(f"cannot reach the sandbox zygote: {exc}") from None

    # -- what the zygote reports ----------------------------------------------------------------------

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await loop.sock_recv(self.control, 65536)
                if not data:
                    break
                self._on_message(json.loads(data))
        except (OSError, ValueError) as exc:
            logger.error("sandbox zygote control channel failed: %r", exc)
        finally:
            self.alive = False
            if self._ready is not None and not self._ready.done():
                self._ready.set_exception(ZygoteDied("exited before it was ready"))
            for exited in self._exits.values():
                if not exited.done():
                    exited.set_exception(ZygoteDied("the sandbox zygote died"))
                    exited.exception()  # mark retrieved: the run may already have given up

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("t")
        if kind == "ready" and self._ready is not None and not self._ready.done():
            self._ready.set_result(message)
            return
        if kind == "status":
            waiters, self._status_waiters = self._status_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(message)
            return
        exited = self._exits.get(int(message.get("id", -1)))
        if exited is None or exited.done():
            return
        if kind == "exited":
            exited.set_result(
                ExitInfo(
                    status=int(message["status"]),
                    wall_killed=bool(message["wall_killed"]),
                    cpu=float(message["cpu"]),
                    duration=float(message["duration"]),
                    memory_killed=bool(message.get("memory_killed", False)),
                    user=float(message.get("user", 0.0)),
                    system=float(message.get("system", 0.0)),
                    minor_faults=int(message.get("minflt", 0)),
                )
            )
        elif kind == "refused":  # the zygote could not start a child for this run
            exited.set_exception(ZygoteRefused(str(message.get("reason", "no child could be started"))))
            exited.exception()

    async def close(self) -> None:
        self.alive = False
        # Stop the reader before closing the socket: the event loop watches descriptor numbers, and a
        # number closed while still watched is soon reused by a new socketpair, whose reader the stale
        # registration's removal would then silently drop.
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        with contextlib.suppress(OSError):
            self.control.close()
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.process.wait(), 5)


class ZygoteRefused(Exception):
    """The zygote answered a spawn with a refusal (e.g. every sandbox identity is in use)."""

"""The replica's side of the sandbox: runs executions in children of its zygote, turns what it sees into
outcomes. The zygote process itself (spawning, control socket) is `zygote_client`'s.

Runs in the replica's event loop; many `run()` calls share one zygote concurrently. Trust boundaries:
the zygote is trusted (no user code runs in it), every byte from a child is not (frames are capped,
JSON only, re-validated in `classify`). Code objects only ever flow from here to a child, compiled here
under the policy and cached by the hash of the source.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from reconciler import refusals
from reconciler.outcome import CLIENT_METHODS, BrokerCall, BrokerError, ExecutionOutcome, ExecutionRequest
from reconciler.policy import PolicyError
from reconciler.policy.cache import CompiledCache
from reconciler.policy.pool import CompilePool
from reconciler.sandbox import host, layers, protocol
from reconciler.sandbox.classify import ExitInfo, Observed, classify, clean_json
from reconciler.sandbox.confine import set_dumpable
from reconciler.sandbox.limits import SandboxLimits
from reconciler.sandbox.zygote_client import ZygoteClient, ZygoteDied, ZygoteRefused

logger = logging.getLogger(__name__)

MAX_CLIENT_CALLS = 1000  # per execution; the broker rate-limits too, this bounds the replica's work
_LOST_GRACE = 10.0  # beyond the wall limit, how long before the zygote itself is presumed hung


def harden_replica_process() -> None:
    """Make the calling (replica) process non-dumpable: its /proc files become root-owned and it cannot
    be ptraced by its own uid. Needed when the replica does not run as root (children then share its
    uid inside a user namespace); harmless and recommended when it does. Call once at start-up."""
    set_dumpable(False)


@dataclass
class _Run:
    id: int
    zygote: ZygoteClient
    observed: Observed


def _refusal(error: BrokerError) -> dict[str, Any]:
    return {"ok": False, "kind": error.kind, "message": error.message}


class Sandbox:
    def __init__(self, limits: SandboxLimits, compiler: CompiledCache | None = None) -> None:
        self.limits = limits
        # Compiled off the event loop, in worker processes; cached by source within a byte budget.
        self.compiler = compiler or CompiledCache(CompilePool())
        self._zygote: ZygoteClient | None = None
        self._start_lock: asyncio.Lock | None = None
        self._layers: dict[str, bool] = {}
        self._ids = itertools.count(1)
        self._runs: dict[int, _Run] = {}
        self._uids: host.UidBlock | None = None
        self._cgroups: list[host.MemoryCgroup] = []  # of the current zygote (last) and dead ones
        self._max_frame = 8 * (limits.output_bytes + limits.result_bytes + limits.state_bytes) + 65536

    # -- lifecycle ------------------------------------------------------------------------------------

    @property
    def layers(self) -> dict[str, bool]:
        """Which isolation layers are active on this host (as a real confined child reported them)."""
        return {name: bool(self._layers.get(name, False)) for name in layers.LAYER_NAMES} | {
            key: value for key, value in self._layers.items() if key not in layers.LAYER_NAMES
        }

    async def start(self) -> None:
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._zygote is not None and self._zygote.alive:
                return
            first = not self._layers
            begun = time.monotonic()
            self._zygote = await self._spawn_zygote()
            self._layers = dict(self._zygote.layers)
            _record_start(time.monotonic() - begun, self.layers)
            await self._remove_cgroups(keep_current=True, patience=0)
            if first:
                for name in layers.inactive(self._layers):
                    logger.warning("%s", layers.warning(name))

    def _zygote_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "memory_mb": self.limits.memory_mb,
            "cpu_seconds": self.limits.cpu_seconds,
            "wall_seconds": self.limits.wall_seconds,
            "uids": None,
            "cgroup": None,
        }
        if os.geteuid() == 0:
            # Root can switch to any uid: each concurrent child gets one of this replica's own block.
            if self._uids is None:
                self._uids = host.UidBlock.claim(self.limits.sandbox_uid_base)
            config["uids"] = [self._uids.first, self._uids.count]
        cgroup = host.MemoryCgroup.create()
        if cgroup is not None:
            self._cgroups.append(cgroup)
            config["cgroup"] = {"path": str(cgroup.path), "version": cgroup.version}
        return config

    async def _spawn_zygote(self) -> ZygoteClient:
        return await ZygoteClient.spawn(self._zygote_config())

    async def _remove_cgroups(self, *, keep_current: bool, patience: float) -> None:
        """Remove the cgroups of zygotes that are gone (their children die with them, within moments)."""
        deadline = time.monotonic() + patience
        while True:
            remaining = []
            for index, cgroup in enumerate(self._cgroups):
                if keep_current and index == len(self._cgroups) - 1:
                    remaining.append(cgroup)
                    continue
                cgroup.remove()
                if cgroup.path.exists():
                    remaining.append(cgroup)
            self._cgroups = remaining
            if len(remaining) <= (1 if keep_current else 0) or time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.02)

    async def zygote_status(self) -> dict[str, Any]:
        """What the zygote holds right now: ids of running executions, pids of pre-forked children.
        For diagnostics and tests; raises ZygoteDied if there is no live zygote."""
        zygote = self._zygote
        if zygote is None or not zygote.alive:
            raise ZygoteDied("no live sandbox zygote")
        return await zygote.status()

    async def interrupt_all(self) -> None:
        for run in list(self._runs.values()):
            run.observed.interrupted = True
            with contextlib.suppress(ZygoteDied):
                await run.zygote.kill(run.id)

    async def close(self) -> None:
        await self.interrupt_all()
        if self._zygote is not None:
            zygote, self._zygote = self._zygote, None
            await zygote.close()
        await self._remove_cgroups(keep_current=False, patience=5.0)
        if self._uids is not None:
            self._uids.close()
            self._uids = None
        await self.compiler.pool.close()

    # -- one execution --------------------------------------------------------------------------------

    def _failed_before_start(self, message: str) -> ExecutionOutcome:
        return ExecutionOutcome(status="failed", duration=0.0, error=message)

    async def run(self, request: ExecutionRequest, broker: BrokerCall | None = None) -> ExecutionOutcome:
        started = time.monotonic()
        try:
            code = await self.compiler.compile(request.code)
        except PolicyError as exc:
            return self._failed_before_start(f"Policy violation: {exc}")
        try:
            header = protocol.encode(
                {
                    "config": request.config,
                    "state": request.state,
                    "source": request.code,
                    "output_bytes": self.limits.output_bytes,
                    "result_bytes": self.limits.result_bytes,
                    "state_bytes": self.limits.state_bytes,
                    "wall_seconds": self.limits.wall_seconds,
                }
            )
        except (TypeError, ValueError) as exc:
            return self._failed_before_start(f"CONFIG or the stored STATE is not JSON: {exc}")
        try:
            await self.start()
        except RuntimeError as exc:
            logger.error("sandbox unavailable: %s", exc)
            return self._failed_before_start(f"the sandbox is unavailable: {exc}")
        assert self._zygote is not None
        run = _Run(next(self._ids), self._zygote, Observed())
        self._runs[run.id] = run
        try:
            exit_info = await self._execute(run, header, code, broker)
        except ZygoteRefused as exc:
            return self._failed_before_start(f"the sandbox could not start the run: {exc}")
        finally:
            del self._runs[run.id]
        if run.observed.zygote_died or run.observed.lost:
            await run.zygote.close()
        return classify(run.observed, exit_info, self.limits, time.monotonic() - started)

    async def _execute(self, run: _Run, header: bytes, code: bytes, broker: BrokerCall | None) -> ExitInfo | None:
        zygote = run.zygote
        mine, theirs = socket.socketpair()
        conversation: asyncio.Task[None] | None = None
        writer: asyncio.StreamWriter | None = None
        try:
            try:
                exited = await zygote.spawn_child(run.id, theirs.fileno())
            finally:
                theirs.close()  # the zygote has its own copy now (or never will)
            reader, writer = await asyncio.open_unix_connection(sock=mine, limit=1 << 16)
            writer.write(header + protocol.encode_bytes(code))
            conversation = asyncio.create_task(self._converse(run, reader, writer, broker))
            deadline = self.limits.wall_seconds + _LOST_GRACE
            try:
                exit_info = await asyncio.wait_for(asyncio.shield(exited), deadline)
            except TimeoutError:
                run.observed.lost = True
                return None
            # The child is gone, so its socket is at EOF: let the conversation drain what was sent.
            await asyncio.wait({conversation}, timeout=1.0)
            return exit_info
        except ZygoteDied:
            run.observed.zygote_died = True
            return None
        except asyncio.CancelledError:
            # The caller gave up on this run (shutdown, its own timeout): do not leave the child running.
            with contextlib.suppress(ZygoteDied):
                await zygote.kill(run.id)
            raise
        finally:
            zygote.forget(run.id)
            if conversation is not None and not conversation.done():
                conversation.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await conversation
            # Close through the transport when there is one (see `ZygoteClient.close` on descriptor reuse).
            if writer is not None:
                writer.close()
            else:
                with contextlib.suppress(OSError):
                    mine.close()

    async def _converse(
        self, run: _Run, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, broker: BrokerCall | None
    ) -> None:
        """Read the child's frames until it closes its socket, answering its client calls.

        A broker call runs as its own task while reading goes on: a child whose call outlives the
        wall clock reports its timeout (with traceback and output) while the broker still works.
        """
        observed = run.observed
        calls = 0

        def read() -> asyncio.Task[bytes | None]:
            return asyncio.create_task(protocol.read_frame(reader, self._max_frame))

        reading = read()
        calling: asyncio.Task[dict[str, Any]] | None = None
        try:
            while True:
                waiting: set[asyncio.Task[Any]] = {reading} if calling is None else {reading, calling}
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if calling is not None and calling in done:
                    try:
                        reply = calling.result()
                    except (asyncio.CancelledError, Exception) as exc:  # _broker_call handles the rest
                        reply = _refusal(refusals.internal_error("client call", exc, logger, "sandbox"))
                    calling = None
                    writer.write(protocol.encode(reply))
                    await writer.drain()
                if reading not in done:
                    continue
                frame = reading.result()
                if frame is None:
                    return
                message = protocol.decode(frame)
                if not isinstance(message, dict) or observed.report is not None:
                    raise protocol.ProtocolError("unexpected message")
                kind = message.get("t")
                if kind == "out" and isinstance(message.get("data"), str):
                    observed.add_output(message["data"], self.limits.output_bytes)
                elif kind == "call" and calling is None:
                    calls += 1
                    calling = asyncio.create_task(self._broker_call(message, broker, calls))
                elif kind == "done":
                    observed.report = message
                else:
                    raise protocol.ProtocolError(f"unexpected message type {str(kind)[:40]!r}")
                reading = read()
        except protocol.ProtocolError as exc:
            observed.violation = str(exc)
            with contextlib.suppress(ZygoteDied):
                await run.zygote.kill(run.id)
        except (ConnectionError, OSError):
            return  # the child died mid-conversation; its exit status tells the rest
        finally:
            for task in (reading, calling):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _broker_call(self, message: dict[str, Any], broker: BrokerCall | None, calls: int) -> dict[str, Any]:
        method, params = message.get("method"), message.get("params")
        if not isinstance(method, str) or method not in CLIENT_METHODS:
            return _refusal(BrokerError(refusals.INVALID_REQUEST, f"unknown client method {str(method)[:60]!r}"))
        if not isinstance(params, dict) or not set(params) <= set(CLIENT_METHODS[method]):
            names = ", ".join(CLIENT_METHODS[method]) or "none"
            return _refusal(BrokerError(refusals.INVALID_REQUEST, f"{method}: invalid parameters; it takes {names}"))
        if calls > MAX_CLIENT_CALLS:
            reason = f"{method}: more than {MAX_CLIENT_CALLS} client calls in one run; make fewer calls per run"
            return _refusal(BrokerError(refusals.LIMIT_REFUSED, reason))
        if broker is None:
            reason = f"{method}: no exchange client is configured for this run"
            return _refusal(BrokerError(refusals.UNAVAILABLE, reason))
        try:
            params, changed = clean_json(params)
        except RecursionError:
            changed = True
        if changed:  # the broker records parameters (client_order_id, ...) in the database
            reason = f"{method}: parameters contain NUL characters or unpaired surrogates"
            return _refusal(BrokerError(refusals.INVALID_REQUEST, reason))
        try:
            value = await broker(method, params)
            json.dumps(value, allow_nan=False)
        except BrokerError as exc:
            return _refusal(exc)
        except Exception as exc:
            # Never forward the text of an unexpected exception: it may carry the replica's secrets.
            return _refusal(refusals.internal_error(method, exc, logger, "sandbox broker call"))
        return {"ok": True, "value": value}


def _record_start(seconds: float, layers: dict[str, bool]) -> None:
    # Imported here, not at the top: the zygote imports this package, and it needs no metrics.
    from reconciler import metrics

    metrics.sandbox_started(seconds, layers)

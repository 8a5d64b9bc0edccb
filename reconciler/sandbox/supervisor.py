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
        # `is None`, not `or`: a cache with nothing in it yet (the replica's, at start) is falsy (`__len__`),
        # and replacing it would compile every source twice, outside the replica's settings.
        self.compiler = compiler if compiler is not None else CompiledCache(CompilePool())
        self._zygote: ZygoteClient | None = None
        self._start_lock: asyncio.Lock | None = None
        self._layers: dict[str, bool] = {}
        self._ids = itertools.count(1)
        self._runs: dict[int, _Run] = {}
        # Runs not in `_runs` yet (compiling, waiting for the zygote): `interrupt_all` must reach them
        # too, or one interrupted there would start its process afterwards and run in full.
        self._starting: dict[int, Observed] = {}
        self._uids: host.UidBlock | None = None
        self._cgroups: list[host.MemoryCgroup] = []  # of the current zygote (last) and dead ones
        self._max_frame = 8 * (limits.output_bytes + limits.result_bytes + limits.state_bytes) + 65536
        # Kills the conversations asked for (a protocol violation): held until done.
        self._background: set[asyncio.Task[None]] = set()

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
        """End every run in progress, `interrupted`: those not started yet never start their process."""
        for observed in self._starting.values():
            observed.interrupted = True
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
        # Registered before the first await, so an `interrupt_all` from now on reaches this run.
        run_id, observed = next(self._ids), Observed()
        self._starting[run_id] = observed
        try:
            return await self._run(request, broker, run_id, observed, started)
        finally:
            self._starting.pop(run_id, None)

    async def _run(
        self, request: ExecutionRequest, broker: BrokerCall | None, run_id: int, observed: Observed, started: float
    ) -> ExecutionOutcome:
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
        if observed.interrupted:
            # Interrupted before its process started: none is started now.
            return classify(observed, None, self.limits, time.monotonic() - started)
        run = _Run(run_id, self._zygote, observed)
        # Nothing suspends from here until the spawn request is sent (but for a full control socket,
        # a moment): an interrupt_all from now on finds the run in `_runs` and asks the zygote to
        # kill its child after asking for the child.
        del self._starting[run_id]
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
        conversation: _Conversation | None = None
        try:
            try:
                exited = await zygote.spawn_child(run.id, theirs.fileno())
            finally:
                theirs.close()  # the zygote has its own copy now (or never will)
            mine.setblocking(False)
            conversation = _Conversation(self, run, mine, broker)
            conversation.send(header + protocol.encode_bytes(code))
            if not exited.done():
                await _first_of(exited, self.limits.wall_seconds + _LOST_GRACE)
            if not exited.done():
                run.observed.lost = True
                return None
            exit_info = exited.result()
            # The child is gone, so its socket is at EOF: let the conversation drain what was sent.
            if not conversation.ended.done():
                await asyncio.wait({conversation.ended}, timeout=1.0)
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
            if conversation is None:
                with contextlib.suppress(OSError):
                    mine.close()
            else:
                calling = conversation.close()
                if calling is not None:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await calling

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


class _Conversation:
    """One child's socket, read and written from event-loop callbacks until the child closes it,
    answering its client calls.

    No stream, transport, protocol or task per execution: a reader callback parses the frames as
    they arrive, a writer callback is registered only while a reply waits for room. With asyncio's
    streams each execution built a transport, a protocol, a reader and a writer, and a task per frame
    read with an `asyncio.wait` around it: a seventh of the serve process's Python calls per
    execution at capacity (`bench_reconciler.py`), and the same share of the sandbox alone's.
    A broker call runs as its own task while reading goes on: a child whose call outlives the wall
    clock reports its timeout (with traceback and output) while the broker still works.
    """

    def __init__(self, sandbox: Sandbox, run: _Run, sock: socket.socket, broker: BrokerCall | None) -> None:
        self._sandbox = sandbox
        self._run = run
        self._sock = sock
        self._fd = sock.fileno()
        self._broker = broker
        self._loop = asyncio.get_running_loop()
        self._inbox = bytearray()
        self._outbox = bytearray()
        self._reading = True
        self._writing = False
        self._calls = 0
        self._calling: asyncio.Task[dict[str, Any]] | None = None
        # Done when the child closed its socket, broke the protocol, or the socket failed.
        self.ended: asyncio.Future[None] = self._loop.create_future()
        # Registered from the run's task: the callbacks (and the broker calls they start) run in a
        # copy of its context, so every line they log names the execution.
        self._loop.add_reader(self._fd, self._readable)

    def send(self, data: bytes) -> None:
        if self.ended.done():
            return
        if not self._outbox:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._end()  # the child is gone; its exit status tells the rest
                return
            if sent == len(data):
                return
            data = data[sent:]
        self._outbox += data
        if not self._writing:
            self._writing = True
            self._loop.add_writer(self._fd, self._writable)

    def close(self) -> asyncio.Task[dict[str, Any]] | None:
        """Stop watching the socket and close it; the broker call still running, cancelled (the
        caller awaits it), if any."""
        self._end()
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)
        # Unwatched before it is closed: the event loop watches descriptor numbers, and a number
        # closed while still watched is soon reused by the next socketpair.
        self._sock.close()
        calling, self._calling = self._calling, None
        if calling is not None and not calling.done():
            calling.cancel()
            return calling
        return None

    def _end(self) -> None:
        if not self.ended.done():
            self.ended.set_result(None)
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def _writable(self) -> None:
        try:
            sent = self._sock.send(self._outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            sent = len(self._outbox)
            self._end()
        del self._outbox[:sent]
        if not self._outbox and self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)

    def _readable(self) -> None:
        try:
            data = self._sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._end()  # the child died mid-conversation; its exit status tells the rest
            return
        try:
            if not data:
                if self._inbox:
                    where = "header" if len(self._inbox) < protocol.HEADER_SIZE else "frame"
                    raise protocol.ProtocolError(f"connection closed mid-{where}")
                self._end()
                return
            self._inbox += data
            for body in protocol.take_frames(self._inbox, self._sandbox._max_frame):
                self._on_message(protocol.decode(body))
        except protocol.ProtocolError as exc:
            self._run.observed.violation = str(exc)
            self._end()
            kill = self._loop.create_task(self._kill())
            self._sandbox._background.add(kill)
            kill.add_done_callback(self._sandbox._background.discard)

    def _on_message(self, message: Any) -> None:
        observed = self._run.observed
        if not isinstance(message, dict) or observed.report is not None:
            raise protocol.ProtocolError("unexpected message")
        kind = message.get("t")
        if kind == "out" and isinstance(message.get("data"), str):
            observed.add_output(message["data"], self._sandbox.limits.output_bytes)
        elif kind == "call" and self._calling is None:
            self._calls += 1
            self._calling = self._loop.create_task(self._sandbox._broker_call(message, self._broker, self._calls))
            self._calling.add_done_callback(self._answered)
        elif kind == "done":
            observed.report = message
        else:
            raise protocol.ProtocolError(f"unexpected message type {str(kind)[:40]!r}")

    def _answered(self, calling: asyncio.Task[dict[str, Any]]) -> None:
        if calling is not self._calling:
            return  # the conversation was closed meanwhile
        self._calling = None
        if calling.cancelled():
            reply = _refusal(refusals.internal_error("client call", asyncio.CancelledError(), logger, "sandbox"))
        else:
            exc = calling.exception()
            if exc is not None:  # _broker_call handles the rest
                reply = _refusal(refusals.internal_error("client call", exc, logger, "sandbox"))
            else:
                reply = calling.result()
        self.send(protocol.encode(reply))

    async def _kill(self) -> None:
        with contextlib.suppress(ZygoteDied):
            await self._run.zygote.kill(self._run.id)


async def _first_of(future: asyncio.Future[Any], seconds: float) -> None:
    """Wait until `future` is done or `seconds` have passed, whichever comes first (without raising
    what it raises): one timer and one waiter, where `wait_for(shield(...))` built several."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = loop.call_later(seconds, wake)
    future.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        future.remove_done_callback(wake)


def _record_start(seconds: float, layers: dict[str, bool]) -> None:
    # Imported here, not at the top: the zygote imports this package, and it needs no metrics.
    from reconciler import metrics

    metrics.sandbox_started(seconds, layers)

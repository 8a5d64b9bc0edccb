"""The sandboxed child: forked from the zygote, confined, runs one strategy, reports, exits.

Everything here runs after `confine_child`, as an unprivileged uid under seccomp, in a process that
only ever holds this one execution's data. It imports neither the settings nor any store: nothing that
holds a secret or a connection is loaded beside user code.

Messages to the supervisor (length-prefixed JSON, see `protocol`):
  {"t": "out", "data": str}                                  captured print/log output, in chunks
  {"t": "call", "method": str, "params": {...}}              a client call; the reply comes back
  {"t": "done", "status", "error", "result", "state", "dropped"}  the end of the execution
"""

from __future__ import annotations

import builtins
import gc
import io
import json
import linecache
import marshal
import mmap
import os
import random
import resource
import signal
import socket
import sys
import time
import traceback
import types
from typing import Any, NoReturn, cast

import numpy
import pandas

from reconciler import refusals
from reconciler.policy import STRATEGY_FILENAME, PolicyViolation, guards
from reconciler.sandbox import protocol
from reconciler.sandbox.client_proxy import ExchangeError, make_client_class
from reconciler.sandbox.confine import CHILD_FD, ChildPlan, confine_child
from reconciler.sandbox.jsonable import strict_default, to_jsonable

MAX_REQUEST_BYTES = 64 << 20  # from the trusted supervisor: code, CONFIG and STATE
MAX_REPLY_BYTES = 16 << 20  # broker replies (market data can be large)
_FLUSH_BYTES = 8192
_PIECE_CHARS = 1024  # output frames of the last resort, when the strategy left too little memory
# Address space held back from the strategy and released once its run is over (or on MemoryError), so
# that its report can be built and sent when the strategy has used everything else: glibc grows the
# heap in 2 MiB steps here (the hugetlb tunable aligns its top to a huge page), and the report needs a
# few copies of the output and of RESULT and STATE on top of that. Held twice (see `Execution.run`).
_RESERVE_BYTES = 4 << 20
_TICK = 0.25  # seconds between output flushes and wall-clock checks
# What a call raises when the strategy's memory is full, everywhere a failure is tolerated (the output
# stays pending, a smaller report goes, the limits are switched off all the same): SystemError too.
# With the strategy's memory full a run of the memory tests ended with a SystemError in place of a
# MemoryError (2 runs in 80); one such was traced to `signal.signal` in `_disarm` (see there).
_OUT_OF_MEMORY_IN_SEND = (MemoryError, SystemError)
# Built once in the zygote; each child gets its own copy-on-write copy through the fork, and no
# strategy can reach it to modify it (`__builtins__` starts with `_`).
_BUILTINS = guards.make_builtins()
_ERROR_CAP = 16384
_MT19937_KEY_BYTES = 624 * 4


# Phase stamps of this child (CPU seconds user and system, minor faults), kept only when the zygote's
# plan asks for them (the profile benchmark); sent with the report as "phases".
_phases: list[tuple[str, float, float, int]] | None = None


def stamp(phase: str) -> None:
    if _phases is not None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        _phases.append((phase, usage.ru_utime, usage.ru_stime, usage.ru_minflt))


def _start_phases(plan: ChildPlan) -> None:
    global _phases
    if plan.profile:
        _phases = []
        stamp("forked")


class CpuTimeExceeded(BaseException):
    """SIGXCPU: the CPU limit was reached (BaseException, so `except Exception` does not swallow it)."""

    __module__ = "builtins"  # shown as `CpuTimeExceeded: ...`, not with this module's path


class WallTimeExceeded(BaseException):
    """SIGALRM: the wall-clock limit was reached; the zygote's SIGKILL follows shortly if ignored."""

    __module__ = "builtins"


class Channel:
    """The socketpair, with sends that a signal handler never interrupts mid-frame.

    The CPU and wall-clock handlers raise into the strategy; if one fires while a frame is half
    written, the exception waits until the frame is complete (a torn frame would cost the user the
    whole report), then is raised from `send`.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.busy = False
        self._deferred: BaseException | None = None

    def send(self, message: Any) -> None:
        self.busy = True
        try:
            protocol.send(self.sock, message)
        finally:
            self.release()

    def send_frame(self, frame: bytes) -> None:
        """An already encoded frame: sending it allocates nothing (the last resort of `send_report`)."""
        self.busy = True
        try:
            self.sock.sendall(frame)
        finally:
            self.release()

    def release(self) -> None:
        """End a send (or an `Output.flush`), and raise the limit exception deferred during it.

        Raised even when the send itself failed (it then replaces that error): left pending, it would
        be raised by the next send, which may be the final report's, once nothing would catch it as
        the run's timeout (the run was then recorded as a fault of the service).
        """
        self.busy = False
        if self._deferred is not None:
            deferred, self._deferred = self._deferred, None
            raise deferred

    def forget_deferred(self) -> None:
        """Once the limits are off: the run's `expired` has recorded any limit that fired."""
        self._deferred = None

    def interrupt(self, exc: BaseException) -> None:
        """Called from a signal handler: raise now, or as soon as the current frame is sent."""
        if self.busy:
            self._deferred = exc
            return
        raise exc


class Output:
    """Captured print and log output, capped, streamed to the supervisor in chunks.

    Streaming (rather than one message at the end) keeps what was printed before a SIGKILL.
    """

    def __init__(self, channel: Channel, cap: int) -> None:
        self._channel = channel
        self._cap = cap
        self._kept = 0
        self._pending: list[str] = []
        self._pending_bytes = 0
        self.dropped = 0

    def write(self, text: str) -> None:
        """Keep `text` (up to the cap), or raise and keep nothing of it: a strategy that writes again
        after a MemoryError (print and log raise it with memory full) must not get its text twice.
        """
        if not isinstance(text, str):
            text = str(text)
        data = text.encode("utf-8", "replace")
        room = self._cap - self._kept
        dropped = self.dropped
        if len(data) > room:
            dropped += len(data) - max(room, 0)
            data = data[: max(room, 0)]
        if data:
            chunk = data.decode("utf-8", "ignore")
            kept, pending_bytes = self._kept + len(data), self._pending_bytes + len(data)
            self._pending.append(chunk)  # the last step that allocates: until here, nothing is kept
            self._kept, self._pending_bytes = kept, pending_bytes
        self.dropped = dropped
        if data and self._pending_bytes >= _FLUSH_BYTES:
            try:  # noqa: SIM105 (as in `send_report`: suppress() allocates)
                self.flush()
            except _OUT_OF_MEMORY_IN_SEND:
                # The text is kept, pending, for the next flush or the report. Raised, it told the
                # strategy that its text was not kept: one that wrote it again after the MemoryError
                # had it sent twice (a line at the 8192-byte boundary, 57 times until the cap).
                pass

    def flush(self) -> None:
        """Send what is pending, in one frame.

        The chunks leave `_pending` only once their frame is sent: a send that fails (with memory full,
        encoding the frame raises MemoryError) keeps them, in order, for the next flush or the final
        report. The whole of it counts as a send (`Channel.busy`), so neither the periodic tick's own
        flush nor a limit exception can come between sending the chunks and taking them out (which
        would send them twice).
        """
        channel = self._channel
        if channel.busy or not self._pending:
            return
        channel.busy = True
        # No cyclic collection while the frame is built and sent: a collection started by one of its
        # allocations runs the strategy's finalisers (a generator's `finally` in a cycle), and one
        # that printed added a chunk after the join and before the clear, counted and never sent (a
        # hostile-tenant session lost a line so). Checking and switching the collector allocates
        # nothing; the strategy's own setting is restored.
        collecting = gc.isenabled()
        gc.disable()
        try:
            protocol.send(channel.sock, {"t": "out", "data": "".join(self._pending)})
            self._pending.clear()  # in place: a new list is an allocation, which may fail here
            self._pending_bytes = 0
        finally:
            if collecting:
                gc.enable()
            channel.release()

    def flush_in_pieces(self) -> None:
        """What is pending, in frames small enough to build in what little memory is left; each is sent
        before the next is built. The last resort, just before the final report: a failure part way
        leaves the pieces already sent pending, and nothing flushes again after it."""
        for chunk in self._pending:
            for start in range(0, len(chunk), _PIECE_CHARS):
                self._channel.send({"t": "out", "data": chunk[start : start + _PIECE_CHARS]})
        self._pending.clear()
        self._pending_bytes = 0


class _PrintCollector:
    """RestrictedPython's `print` target: `print(x)` becomes `_print._call_print(x)`. Also the strategy's
    `sys.stdout` and `sys.stderr`, where unrestricted code and the libraries print."""

    def __init__(self, output: Output) -> None:
        self._output = output

    def write(self, text: str) -> None:
        self._output.write(text)

    def flush(self) -> None:
        pass

    def __call__(self) -> str:  # the `printed` name of RestrictedPython: not kept, output is streamed
        return ""

    def _call_print(self, *objects: Any, **kwargs: Any) -> None:
        file = kwargs.get("file")
        output = self._output if file is None else _recorder(file)
        if output is None:  # a file of the strategy's own: how print writes to it is its business
            guards.guarded_getattr(file, "write")
            _BUILTIN_PRINT(*objects, **kwargs)
            return
        _print_whole(output, objects, kwargs)


# The interpreter's own `print`, kept before `Execution.run` puts `_recorded_print` in its place.
_BUILTIN_PRINT = builtins.print


def _recorder(file: object) -> Output | None:
    """The output behind `file` if it is one of the sandbox's own recorders, else None.

    `type`, not `isinstance`: an object of the strategy's may answer any `__class__`. (Unrestricted code
    can still set its own object's `__class__` to `_PrintCollector`: its `_output` is then the strategy's
    own, and so is whatever it does with what it is given.)
    """
    kind = type(file)
    if kind is _PrintCollector:
        return cast(_PrintCollector, file)._output
    if kind is Output:
        return cast(Output, file)
    return None


def _print_whole(output: Output, objects: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Built whole, then written once: print writes each object and separator as it goes, so a
    MemoryError (or the strategy's own __str__ raising) part way kept the pieces before it, and a
    strategy that printed again after catching it had them twice. `kwargs` is the caller's own copy."""
    buffer = io.StringIO()
    kwargs["file"] = buffer
    _BUILTIN_PRINT(*objects, **kwargs)
    output.write(buffer.getvalue())


def _recorded_print(*objects: Any, **kwargs: Any) -> None:
    """`print` itself in the child (`builtins.print`): whole when it writes to one of the sandbox's
    recorders, as the strategy's own print is. Unrestricted code calls it, and so do the libraries
    (`np.info`), by default to `sys.stdout`, which is a recorder."""
    file = kwargs.get("file")
    output = _recorder(sys.stdout if file is None else file)
    if output is None:
        _BUILTIN_PRINT(*objects, **kwargs)
        return
    _print_whole(output, objects, kwargs)


class StrategyLog:
    """`log("...")`, `log.info(...)`, `log.warning(...)`, `log.error(...)`: lines in the output."""

    def __init__(self, output: Output) -> None:
        self._output = output

    def _emit(self, level: str, args: tuple[Any, ...]) -> None:
        self._output.write(f"[{level}] {' '.join(str(arg) for arg in args)}\n")

    def __call__(self, *args: Any) -> None:
        self._emit("info", args)

    def debug(self, *args: Any) -> None:
        self._emit("debug", args)

    def info(self, *args: Any) -> None:
        self._emit("info", args)

    def warning(self, *args: Any) -> None:
        self._emit("warning", args)

    def error(self, *args: Any) -> None:
        self._emit("error", args)


def strategy_traceback(exc: BaseException, message: str | None = None) -> str:
    """The traceback as the user wrote the code: only frames of `<strategy>`, its own line numbers.

    With `message`, that line ends it instead of the exception's own text (whose `str` may be the
    strategy's code: see `_limit_traceback`).
    """
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == STRATEGY_FILENAME]
    if message is not None:
        lines = [message]
    elif isinstance(exc, PolicyViolation):
        lines = [f"Policy violation: {exc}\n"]
    else:
        lines = traceback.format_exception_only(type(exc), exc)
    text = "".join(["Traceback (most recent call last):\n", *traceback.format_list(frames), *lines])
    if len(text) > _ERROR_CAP:
        half = _ERROR_CAP // 2
        text = text[:half] + "\n[... traceback shortened ...]\n" + text[-half:]
    return text


def _limit_traceback(exc: BaseException) -> str:
    """The traceback of a limit exception, built once the limits are off: from its frames and our own
    text only. The strategy may have caught the exception and changed it (its args, its notes), or
    raised a subclass of its own, so nothing of the exception's may be called.
    """
    if type(exc) is CpuTimeExceeded:
        return strategy_traceback(exc, "CpuTimeExceeded: CPU time limit exceeded\n")
    if type(exc) is WallTimeExceeded:
        return strategy_traceback(exc, "WallTimeExceeded: wall-clock time limit exceeded\n")
    return "the strategy raised a subclass of its own of a time-limit exception\n"


def _described(exc: BaseException) -> str:
    """The traceback of `exc`, under the run's limits.

    It reads the strategy's exception, which may run its code (the properties a `SyntaxError`
    subclass defines, the `str()` of an argument): whatever that raises is the strategy's, kept, and
    replaced by a message made of our own text; a limit exception goes on to `run`.
    """
    try:
        return strategy_traceback(exc)
    except (CpuTimeExceeded, WallTimeExceeded):
        raise
    except BaseException as failure:
        _kept.append(failure)
        if _out_of_memory(failure):  # a traceback is built in memory too
            return f"{_type_name(exc)} was raised, and there was no memory left to show its traceback\n"
        return (
            f"{_type_name(exc)} was raised, and showing it raised {_type_name(failure)} "
            "(its message or one of its attributes is code of the strategy's that failed)\n"
        )


def _type_name(exc: BaseException) -> str:
    # The qualified name as the type object stores it: a metaclass of the strategy's could make the
    # `__qualname__` attribute run code.
    name = type.__dict__["__qualname__"].__get__(type(exc))
    return name if type(name) is str else "an exception"


# The exception's own stored fields, read through the descriptors of the built-in classes: a subclass
# of the strategy's may define properties of the same names, and nothing of its code may run here
# (this is also read once the limits are off).
_CAUSE = BaseException.__dict__["__cause__"].__get__
_CONTEXT = BaseException.__dict__["__context__"].__get__
_GROUPED = BaseExceptionGroup.__dict__["exceptions"].__get__
_CHAIN_NODES = 100  # exceptions looked at, at most: chains can loop, groups can be wide and deep


def _out_of_memory(exc: BaseException) -> bool:
    """Whether a MemoryError is anywhere in `exc`: itself, its chain (`except MemoryError: raise X`),
    or inside an exception group, at any depth. Runs no code of the strategy's.
    """
    try:
        stack = [exc]
        budget = _CHAIN_NODES
        while stack and budget > 0:
            current = stack.pop()
            budget -= 1
            kind = type(current)  # not `isinstance`, which reads a `__class__` the strategy may define
            if issubclass(kind, MemoryError):
                return True
            if issubclass(kind, BaseExceptionGroup):
                grouped = _GROUPED(current)
                stack.extend(grouped[index] for index in range(min(len(grouped), budget)))
            for linked in (_CAUSE(current), _CONTEXT(current)):
                if linked is not None:
                    stack.append(linked)
    except MemoryError:  # too little memory left to walk it: that is the answer
        return True
    return False


def _report(status: str, error: str) -> dict[str, Any]:
    """A report without RESULT or STATE (the previous STATE is kept)."""
    return {"t": "done", "status": status, "error": error, "result": None, "state": None}


_NO_ROOM_FOR_REPORT = (
    "the strategy used all of its memory, and its report (RESULT and STATE) did not fit in what it left: "
    "use less memory; the previous STATE is kept"
)
# The report of last resort, encoded once in the zygote: sending it needs no memory at all.
_NO_ROOM_FRAME = protocol.encode(_report("memory_exceeded", _NO_ROOM_FOR_REPORT) | {"dropped": 0})


def _short_report(report: dict[str, Any], dropped: int) -> dict[str, Any]:
    """`report` without RESULT and STATE, for a run whose full report did not fit in its memory: a run
    that timed out or ran out of memory stays so, any other is out of memory now."""
    status, error = report.get("status"), report.get("error")
    kept = status if status in ("timed_out", "memory_exceeded") else "memory_exceeded"
    text = _NO_ROOM_FOR_REPORT
    if isinstance(error, str):  # the run's own error first (a traceback ends with its newline)
        text = error + ("" if error.endswith("\n") else "\n") + text
    return _report(kept, text) | {"dropped": dropped}


# Everything of the strategy's (its namespace, the exceptions it raised) stays referenced here until
# `os._exit`: freeing it would run its finalisers (`__del__`, weakref callbacks) after its limits are
# off. Only the zygote's rehearsal empties it.
_kept: list[Any] = []


class Execution:
    def __init__(self, sock: socket.socket, header: dict[str, Any], code: types.CodeType) -> None:
        self.sock = sock
        self.channel = Channel(sock)
        self.header = header
        self.code = code
        self.output = Output(self.channel, int(header["output_bytes"]))
        self.deadline = 0.0
        self.armed = False  # whether the limit handlers may raise into the strategy
        self.expired: CpuTimeExceeded | WallTimeExceeded | None = None  # the first limit that fired
        # The limits' exceptions, built before the strategy runs: a signal handler that built its
        # own, with the strategy's memory full, raised a MemoryError instead and recorded no limit, so
        # a strategy that caught it (and freed its memory) traded on until the hard kill.
        self._cpu_exceeded = CpuTimeExceeded("CPU time limit exceeded")
        self._wall_exceeded = WallTimeExceeded("wall-clock time limit exceeded")
        # The client call whose exchange with the broker failed part way, and what it raised (see
        # `call`): from then on the socket is never read or written for a client call again. Two
        # attributes set in place, not a tuple: marking must not allocate (memory may be full).
        self.broken_call: str | None = None
        self.broken_by: BaseException | None = None
        # The client call whose request is being sent or whose reply is awaited. Code of the strategy's
        # can run in the middle of that exchange (a `__del__` or a weakref callback run by the cyclic
        # collector at one of its allocations): a call made from there must not use the socket, where
        # its request would come in the middle of this one's exchange and its reply could be this one's.
        # It is refused, and names itself in `nested_call`; what marks the run broken then is made here,
        # in advance, since marking must not allocate.
        self.calling: str | None = None
        self.nested_call: str | None = None
        self._nested_error = ExchangeError(
            refusals.UNAVAILABLE, "a client call was made while another was waiting for its reply"
        )

    def call(self, method: str, params: dict[str, Any]) -> Any:
        if self.expired is not None:
            # Over a limit, the run is timed out whatever it does next; a strategy that caught the
            # limit's exception must not trade on until the kill (orders placed after it, found by
            # a hostile-tenant session).
            raise ExchangeError(refusals.LIMIT_REFUSED, f"{method}: this run is over its time limit")
        if self.calling is not None:
            self._refuse_nested(method, self.calling)
        if self.broken_by is not None:
            raise ExchangeError(refusals.UNAVAILABLE, f"{method}: refused: {self._broken_reason()}")
        self.output.flush()  # keep output in order with the broker's own records
        frame = protocol.encode({"t": "call", "method": method, "params": params})  # nothing sent yet
        try:
            self.calling = method if type(method) is str else "a client call"
            self.channel.send_frame(frame)
            body = protocol.recv_frame(self.sock, MAX_REPLY_BYTES)
        except BaseException as exc:
            # The request was sent (or partly), and its reply not read whole: what is left of it in
            # the socket would be read as the next call's reply. A MemoryError part way through a
            # large reply, a limit's exception raised by its signal handler, a reply over the cap, or
            # anything a signal handler raised before the reply came: the socket is never used for a
            # call again. (Reading into a buffer allocated in advance would cover memory alone, and
            # hold MAX_REPLY_BYTES of every run's memory.) A nested call that broke the run first
            # (see `_refuse_nested`) stays its cause.
            if self.broken_by is None:
                self.broken_call = self.calling
                self.broken_by = exc
            if isinstance(exc, protocol.ProtocolError):
                # The strategy is told in the client's own terms, not with our internal exception.
                raise ExchangeError(
                    refusals.UNAVAILABLE,
                    f"{self.calling}: its reply could not be taken ({exc}); this run can make no more "
                    "client calls, and the call may have taken effect at the exchange",
                ) from None
            raise
        finally:
            self.calling = None
        reply = protocol.decode(body)
        if reply.get("ok"):
            return reply.get("value")
        kind, message = reply.get("kind"), reply.get("message")
        raise ExchangeError(
            kind if isinstance(kind, str) else refusals.INTERNAL,
            message if isinstance(message, str) else f"{method}: the call failed",
        )

    def _refuse_nested(self, method: str, waiting: str) -> NoReturn:
        """Refuse a client call made while `waiting` was in its exchange with the broker, sending
        nothing; the run is broken from here on, like one whose reply could not be read: it has done
        something it cannot be trusted with (a finaliser that trades), so it trades no more, and its
        report fails it naming `waiting`, whose request had gone out."""
        if self.broken_by is None:  # marked before the refusal is built, which allocates
            self.broken_call = waiting
            self.nested_call = method if type(method) is str else "a client call"
            self.broken_by = self._nested_error
        raise ExchangeError(
            refusals.UNAVAILABLE,
            f"{method}: refused: it was made while the client call {waiting} was waiting for its reply (by a "
            "finaliser, a __del__ or a weakref callback, that ran then); this run can make no more client "
            f"calls, and {waiting} may have taken effect at the exchange",
        )

    def _broken_reason(self) -> str:
        """Why every client call is refused once the run is broken (see `call`)."""
        if self.nested_call is not None:
            return (
                f"a client call ({self.nested_call}) was made while an earlier one ({self.broken_call}) was "
                "waiting for its reply, so this run can make no more client calls; the earlier call may "
                "have taken effect at the exchange"
            )
        return (
            f"the reply to an earlier client call ({self.broken_call}) could not be read in full, so this "
            "run can make no more client calls (the next reply read would not have been this call's); the "
            "earlier call may have taken effect at the exchange"
        )

    def namespace(self) -> dict[str, Any]:
        output = self.output
        global _current
        _current = self
        client_class = _CLIENT_CLASS
        return {
            "__builtins__": _BUILTINS,
            "__name__": guards.STRATEGY_MODULE,
            "_print_": lambda _getattr_=None: _PrintCollector(output),
            "CONFIG": self.header["config"],
            "STATE": self.header["state"],
            "RESULT": None,
            "pd": guards.module_view(pandas),
            "np": guards.module_view(numpy),
            "CoinDCXClient": client_class,
            "client": client_class(),
            "ExchangeError": ExchangeError,
            "log": StrategyLog(output),
        }

    def run(self) -> dict[str, Any]:
        # What libraries print for the strategy (df.info(), warnings) joins its output: descriptors
        # 1 and 2 are closed in the child.
        sys.stdout = sys.stderr = _PrintCollector(self.output)  # type: ignore[assignment]
        builtins.print = _recorded_print
        source = str(self.header.get("source", ""))
        linecache.cache[STRATEGY_FILENAME] = (len(source), None, source.splitlines(True), STRATEGY_FILENAME)
        namespace = self.namespace()
        _kept.append(namespace)
        stamp("namespace built")
        try:
            report = self._execute(namespace)
        except BaseException as exc:
            # The limits are off here (`_execute` disarmed them on its way out): nothing of `exc` may be
            # called, and it is kept, so that freeing it (its frames, a generator suspended in them)
            # runs nothing of the strategy's either.
            _kept.append(exc)
            if issubclass(type(exc), (CpuTimeExceeded, WallTimeExceeded)):
                # The run ended by a limit, or a limit signal landed while its report was being
                # finished, before the handlers were disarmed: either way, this run's timeout.
                return _report("timed_out", _limit_traceback(exc))
            if _out_of_memory(exc):  # our own code, building the report in what memory the run left
                return _report("memory_exceeded", _NO_ROOM_FOR_REPORT)
            # Only the strategy's own code raises through the guards of `_run_and_store`.
            return _report("failed", "the strategy's objects raised while its report was being built")
        finally:
            self._disarm()
        if self.expired is not None and report["status"] != "timed_out":
            # A limit fired but its exception was swallowed on the way (a bare `except:`, the
            # strategy's or a library's, such as `traceback` formatting a `str()` that loops): the
            # run still went over its limit.
            return _report("timed_out", _limit_traceback(self.expired))
        if self.broken_by is not None and report["status"] not in ("timed_out", "memory_exceeded"):
            # The strategy caught what broke a client call, and ran on with its later calls refused:
            # its RESULT and STATE were made without them.
            return self._broken_report(report, self.broken_by)
        return report

    def _broken_report(self, report: dict[str, Any], broken_by: BaseException) -> dict[str, Any]:
        """The report of a run that went on after a client call broke off part way (see `call`):
        `memory_exceeded` if a MemoryError broke it, `failed` otherwise, with the strategy's own error
        first. Runs once the limits are off: nothing of the exception's is called (`_type_name` and
        `_out_of_memory` read only what the built-in types store)."""
        out_of_memory = _out_of_memory(broken_by)
        if self.nested_call is not None:
            return self._with_error(report, self._nested_report(), "failed")
        text = (
            f"the reply to the client call {self.broken_call} could not be read in full "
            f"({_type_name(broken_by)} was raised while it was being read"
            f"{': the run ran out of memory' if out_of_memory else ''}), and the strategy went on: every "
            "client call after it was refused, since what was left of that reply would have been read "
            f"as the next call's; {self.broken_call} may have taken effect at the exchange; the previous "
            "STATE is kept"
        )
        return self._with_error(report, text, "memory_exceeded" if out_of_memory else "failed")

    @staticmethod
    def _with_error(report: dict[str, Any], text: str, status: str) -> dict[str, Any]:
        """A report of `status` saying `text`, after the strategy's own error if it had one."""
        error = report.get("error")
        if isinstance(error, str):
            text = error + ("" if error.endswith("\n") else "\n") + text
        return _report(status, text)

    def _nested_report(self) -> str:
        """The end of `_broken_report` for a client call made in the middle of another's exchange."""
        return (
            f"the client call {self.nested_call} was made while the client call {self.broken_call} was "
            "waiting for its reply (by code of the strategy's that ran in the middle of it: a finaliser, "
            "a __del__ or a weakref callback, run by the garbage collector), and the strategy went on: "
            f"{self.nested_call} and every client call after it were refused; {self.broken_call} may have "
            "taken effect at the exchange; the previous STATE is kept"
        )

    def _execute(self, namespace: dict[str, Any]) -> dict[str, Any]:
        """Run the strategy and turn what it left into its report, all under its limits.

        RESULT and STATE are the strategy's own objects, and turning them into JSON may run its code
        (a dict subclass's `items`, a pandas subclass's `to_json`), as may formatting its exception
        (a `SyntaxError` subclass's `text` property, a `str()` of its argument). So that is part of
        its run: timed, limited, and its errors are its own. Once the handlers are disarmed, nothing
        of the strategy's may run again: the report holds only plain JSON values, and every object
        of the strategy's, the exceptions it raised included, stays referenced in `_kept` until
        `os._exit`, so that no finaliser of theirs runs either.
        """
        # Address space held back from the strategy (see _RESERVE_BYTES). An untouched anonymous
        # mapping: it costs no page faults, only the limit. Two: `ballast` is released while the run's
        # limits still hold, to describe its failure or store RESULT and STATE with memory full, and
        # that can run the strategy's code (an exception group's `exceptions`, a `text` property),
        # which may take the room back; `reserve` is released only once nothing of the strategy's can
        # run, so the report always has its room.
        ballast = mmap.mmap(-1, _RESERVE_BYTES)
        reserve = mmap.mmap(-1, _RESERVE_BYTES)
        wall = float(self.header["wall_seconds"])
        self.deadline = time.monotonic() + wall - 0.01  # timer granularity: the tick may come early
        self.armed = True
        signal.signal(signal.SIGXCPU, self._on_cpu_limit)
        signal.signal(signal.SIGALRM, self._on_tick)
        # A tick every _TICK seconds streams captured output (so a SIGKILL loses at most one tick of
        # it) and raises WallTimeExceeded at the deadline; the zygote's SIGKILL follows if ignored.
        signal.setitimer(signal.ITIMER_REAL, min(_TICK, wall), _TICK)
        try:
            return self._run_and_store(namespace, ballast)
        finally:
            try:
                self._disarm()
            finally:  # even if disarming could not allocate: the report needs the room
                ballast.close()
                reserve.close()

    def _run_and_store(self, namespace: dict[str, Any], ballast: mmap.mmap) -> dict[str, Any]:
        # A limit exception raised anywhere here (CpuTimeExceeded, WallTimeExceeded) propagates to
        # `run`, which records the timeout; so does anything the strategy's code raises where no
        # guard below catches it.
        error: str | None
        try:
            exec(self.code, namespace)
        except (CpuTimeExceeded, WallTimeExceeded):
            raise
        except BaseException as exc:  # the strategy's own failure, reported with its traceback
            _kept.append(exc)
            if _out_of_memory(exc):  # raised by the limit, or caught and re-raised as another error
                ballast.close()  # first: showing the traceback needs memory of its own
                return _report("memory_exceeded", _described(exc))
            status, error = "failed", _described(exc)
        else:
            status, error = "succeeded", None
        stamp("strategy ran")
        state: dict[str, Any] | None = None
        try:
            result = self._result(namespace.get("RESULT"))
            if status == "succeeded":
                state, state_error = self._state(namespace.get("STATE"))
                if state_error:
                    status, error = "failed", state_error
        except (CpuTimeExceeded, WallTimeExceeded):
            raise
        except BaseException as exc:  # raised by the strategy's own objects while they were converted
            _kept.append(exc)
            if _out_of_memory(exc):  # serialising needs memory of its own
                ballast.close()
                return _report(
                    "memory_exceeded",
                    "the strategy's code finished, but storing its RESULT and STATE as JSON ran out of memory: "
                    "keep them small (they are capped anyway; see the output for what was printed)",
                )
            return _report(
                "failed",
                "storing RESULT and STATE as JSON ran the strategy's own code (a method of an object it left in "
                "them), which raised; the previous STATE is kept\n" + _described(exc),
            )
        return {"t": "done", "status": status, "error": error, "result": result, "state": state}

    def send_report(self, report: dict[str, Any]) -> int:
        """Send the output still pending and the report, after the run; the exit code.

        The strategy's objects are never freed (see `_kept`), so when it used all of its memory, the
        report must be sent in what the released reserve gives back: when the whole of it does not fit,
        the output goes in small pieces and the report without RESULT and STATE, and as a last
        resort a report encoded in advance, which needs no memory. Never an error of the service.
        """
        try:
            self.output.flush()
            report["dropped"] = self.output.dropped
            stamp("report built")
            if _phases is not None:
                report["phases"] = _phases
            self.channel.send(report)
            return 0
        except _OUT_OF_MEMORY_IN_SEND:
            pass
        # Not `contextlib.suppress`: building its context manager is an allocation, which may fail.
        try:  # noqa: SIM105
            self.output.flush_in_pieces()
        except _OUT_OF_MEMORY_IN_SEND:
            pass  # what could not be sent is lost; the report goes all the same
        try:
            self.channel.send(_short_report(report, self.output.dropped))
        except _OUT_OF_MEMORY_IN_SEND:
            self.channel.send_frame(_NO_ROOM_FRAME)
        return 0

    def _disarm(self) -> None:
        # First, while the limits still hold: the cyclic collector would run the finalisers of the
        # strategy's unreachable objects at the next allocation (the timer call below makes one),
        # outside its limits. The process exits within milliseconds: nothing needs freeing.
        gc.disable()
        self.armed = False
        self.channel.forget_deferred()
        # Each call takes effect before it builds the value it returns, which is what can fail with the
        # strategy's memory full: then it has done its work all the same. `signal.signal` first runs
        # any handler pending, and with memory full that can fail too, before the handler is set: it
        # then raised a SystemError (caught here since 2 of 25 runs of a memory test were recorded
        # "the strategy's objects raised" by it); SIGXCPU keeps our handler, which does nothing once
        # `armed` is off, and the hard CPU limit's SIGKILL applies all the same.
        try:  # noqa: SIM105 (suppress() allocates)
            signal.setitimer(signal.ITIMER_REAL, 0)
        except _OUT_OF_MEMORY_IN_SEND:
            pass
        try:  # noqa: SIM105
            signal.signal(signal.SIGXCPU, signal.SIG_IGN)  # the hard limit (SIGKILL) still applies
        except _OUT_OF_MEMORY_IN_SEND:
            pass

    def _on_cpu_limit(self, signum: int, frame: Any) -> None:
        if self.armed:
            self._expire(self._cpu_exceeded)

    def _expire(self, exc: CpuTimeExceeded | WallTimeExceeded) -> None:
        # Remembered before it is raised: the strategy (or a library's bare `except:`) may swallow it.
        if self.expired is None:
            self.expired = exc
        self.channel.interrupt(exc)

    def _on_tick(self, signum: int, frame: Any) -> None:
        if not self.armed:
            return
        try:
            now = time.monotonic()
        except MemoryError:
            # With the strategy's memory full, even the clock's float may not be made. Raised from
            # here, the MemoryError would land in whatever the strategy was doing, a send to the
            # supervisor included (a frame cut part way garbles every frame after it). The next tick
            # reads the clock again, and the supervisor's wall-clock kill does not depend on this one.
            return
        if now >= self.deadline:
            self._expire(self._wall_exceeded)
        elif not self.channel.busy:
            try:  # noqa: SIM105 (as in `send_report`: suppress() allocates)
                self.output.flush()
            except _OUT_OF_MEMORY_IN_SEND:
                # The output stays pending for the next flush. Raised here, it would fail whichever
                # line of the strategy's the tick happened to interrupt.
                pass

    def _result(self, value: Any) -> Any:
        try:
            text = json.dumps(to_jsonable(value), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            text = json.dumps(f"<RESULT could not be stored: {exc}>")
        cap = int(self.header["result_bytes"])
        size = len(text.encode("utf-8", "replace"))
        if size <= cap:
            return json.loads(text)
        return {"truncated": True, "original_bytes": size, "preview": text[: min(cap // 2, 1024)]}

    def _state(self, value: Any) -> tuple[dict[str, Any] | None, str | None]:
        if not isinstance(value, dict):
            kind = type(value).__name__
            return None, f"STATE must be a dict (JSON object), not {kind}; the previous STATE is kept"
        try:
            text = json.dumps(value, default=strict_default, allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError) as exc:
            return None, f"STATE is not JSON ({exc}); the previous STATE is kept"
        size = len(text.encode("utf-8", "replace"))
        cap = int(self.header["state_bytes"])
        if size > cap:
            return None, f"STATE is {size} bytes, over the cap of {cap} bytes; the previous STATE is kept"
        return json.loads(text), None


# The one execution of this process (a child runs exactly one); the client class, built once in the
# zygote, forwards its calls here.
_current: Execution | None = None


def _forward_call(method: str, params: dict[str, Any]) -> Any:
    if _current is None:
        raise ExchangeError(refusals.UNAVAILABLE, "the client is not connected")
    return _current.call(method, params)


_CLIENT_CLASS = make_client_class(_forward_call)


def serve(sock_fd: int, plan: ChildPlan) -> NoReturn:
    """Entry point of a forked child: confine, receive the request, run it, report, exit.

    Never returns: `os._exit` skips the zygote's atexit handlers and buffered-stream flushes.
    """
    code = protocol.EXIT_NOT_CONFINED
    try:
        _start_phases(plan)
        confine_child(plan, sock_fd)
        stamp("confined")
        code = _serve_confined(socket.socket(fileno=CHILD_FD))
    finally:
        os._exit(code)


def serve_warm(link_fd: int, plan: ChildPlan) -> NoReturn:
    """Entry point of a pre-forked ("warm") child: confine at once, then wait for an execution.

    The zygote keeps one such child ready, so a run does not wait for a fork and the confinement:
    the execution's socket arrives over `link_fd` (SCM_RIGHTS) when the zygote assigns it one. The
    child holds no tenant data until then, and nothing but that link.
    """
    code = protocol.EXIT_NOT_CONFINED
    try:
        _start_phases(plan)
        confine_child(plan, link_fd)
        stamp("confined")
        code = protocol.EXIT_NO_REQUEST
        with socket.socket(fileno=CHILD_FD) as link:
            _message, fds, _flags, _address = socket.recv_fds(link, 16, 1)
        if len(fds) != 1:  # the zygote is shutting down (EOF) or sent something else
            for fd in fds:
                os.close(fd)
            code = 0
        else:
            code = _serve_confined(socket.socket(fileno=fds[0]))
    finally:
        os._exit(code)


def fresh_random_state() -> None:
    """Reseed `random` and numpy's global generator from the OS: every child is a fork of the same
    zygote, so without this every execution (of every tenant) would draw the same numbers.

    numpy's generator gets a whole MT19937 key's worth of OS entropy (624 words, as many as its
    state holds): as fresh as `numpy.random.seed()`, which derives its key through a SeedSequence
    and costs each execution about 0.2 ms more."""
    random.seed()
    numpy.random.seed(numpy.frombuffer(os.urandom(_MT19937_KEY_BYTES), dtype=numpy.uint32))


def _serve_confined(sock: socket.socket) -> int:
    """Receive the request on `sock`, run it, report; the exit code for the zygote.

    When no report can be sent, the exit code says at which step it failed (protocol.EXIT_*), so the
    recorded error tells the author what happened rather than "exited without reporting".
    """
    try:
        sock.setblocking(True)
        header = protocol.decode(protocol.recv_frame(sock, MAX_REQUEST_BYTES))
        strategy = marshal.loads(protocol.recv_frame(sock, MAX_REQUEST_BYTES))
    except BaseException:
        return protocol.EXIT_NO_REQUEST
    try:
        stamp("request loaded")
        fresh_random_state()
        execution = Execution(sock, header, strategy)
        return execution.send_report(execution.run())
    except BaseException as exc:
        # Kept, as everything of the run is (`_kept`): freeing an exception can run code.
        _kept.append(exc)
        # Read through the built-in descriptors only (`_out_of_memory`): nothing of the strategy's runs.
        return protocol.EXIT_OUT_OF_MEMORY if _out_of_memory(exc) else protocol.EXIT_REPORT_FAILED


_REHEARSAL = """
frame = pd.DataFrame({"close": [1.0, 2.0, 3.0]})
RESULT = {"last": float(frame["close"].iloc[-1]), "items": [1, 2.5, "x"], "none": None}
STATE["runs"] = STATE.get("runs", 0) + 1
print("rehearsal", RESULT["last"])
log.info("rehearsal")
"""


def rehearse() -> None:
    """Run one execution of our own fixed strategy through this module, in the zygote: unconfined,
    with no tenant data, over an in-process socketpair, then put back every global it changed.

    A child's memory is the zygote's, copied page by page as the child writes to it. What a run does
    the first time (lazy imports and initialisation, CPython's method cache, the allocators' free
    lists, the json and marshal machinery) is done here once, in the pages every child shares,
    instead of in each child, where every page it writes is a page fault and a copy.
    """
    from reconciler.policy import compile_strategy

    global _current
    code = marshal.dumps(compile_strategy(_REHEARSAL))
    header = {
        "config": {"symbol": "BTCINR"},
        "state": {},
        "source": _REHEARSAL,
        "output_bytes": 65536,
        "result_bytes": 65536,
        "state_bytes": 65536,
        "wall_seconds": 10.0,
    }
    saved = sys.stdout, sys.stderr, signal.getsignal(signal.SIGXCPU), signal.getsignal(signal.SIGALRM)
    saved_print = builtins.print
    collecting = gc.isenabled()
    mine, theirs = socket.socketpair()
    try:
        mine.sendall(protocol.encode(header) + protocol.encode_bytes(code))
        if _serve_confined(theirs) != 0:
            raise RuntimeError("sandbox zygote: the rehearsal run failed")
        mine.settimeout(10)
        while protocol.decode(protocol.recv_frame(mine, MAX_REPLY_BYTES)).get("t") != "done":
            pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.stdout, sys.stderr = saved[0], saved[1]
        builtins.print = saved_print
        signal.signal(signal.SIGXCPU, saved[2])
        signal.signal(signal.SIGALRM, saved[3])
        linecache.cache.pop(STRATEGY_FILENAME, None)
        _current = None
        _kept.clear()
        if collecting:  # disabled as the rehearsal's run ended (`Execution._disarm`)
            gc.enable()
        mine.close()
        theirs.close()


def probe(sock_fd: int, plan: ChildPlan) -> NoReturn:
    """A child that only confines itself and reports which layers took effect (at zygote start)."""
    code = 70
    try:
        layers = confine_child(plan, sock_fd)
        sock = socket.socket(fileno=CHILD_FD)
        protocol.send(sock, {"layers": layers})
        code = 0
    finally:
        os._exit(code)

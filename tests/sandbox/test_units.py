"""Pure parts of the sandbox, without processes: outcome classification, framing, guards, limits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import types
from collections.abc import Callable
from typing import Any

import pytest

from reconciler.policy import PolicyViolation, guards
from reconciler.sandbox import SandboxLimits, protocol
from reconciler.sandbox.classify import ExitInfo, Observed, classify
from reconciler.settings import load_settings

LIMITS = SandboxLimits(cpu_seconds=1, wall_seconds=2.0, output_bytes=100, result_bytes=200, state_bytes=50)
CLEAN_EXIT = ExitInfo(status=0, wall_killed=False, cpu=0.01, duration=0.01)


def _exited(code: int) -> ExitInfo:
    return ExitInfo(status=code << 8, wall_killed=False, cpu=0.0, duration=0.1)  # raw wait status of exit(code)


def _killed(sig: int, cpu: float = 0.0, wall: bool = False) -> ExitInfo:
    return ExitInfo(status=sig, wall_killed=wall, cpu=cpu, duration=1.0)  # raw wait status of a signal death


def test_limits_from_settings_is_the_one_reader_of_settings() -> None:
    settings = load_settings(
        max_memory_mb=64,
        max_cpu_time_seconds=3,
        max_wall_time_seconds=4.5,
        max_output_bytes=2048,
        max_result_bytes=4096,
        max_state_bytes=8192,
        sandbox_uid_base=3_000_000,
    )
    assert SandboxLimits.from_settings(settings) == SandboxLimits(64, 3, 4.5, 2048, 4096, 8192, 3_000_000)


def test_classify_success_with_output_cap_marker() -> None:
    observed = Observed()
    observed.add_output("x" * 150, LIMITS.output_bytes)
    observed.report = {
        "t": "done",
        "status": "succeeded",
        "error": None,
        "result": [1],
        "state": {"a": 1},
        "dropped": 10,
    }
    outcome = classify(observed, CLEAN_EXIT, LIMITS, 0.5)
    assert outcome.status == "succeeded" and outcome.result == [1] and outcome.state == {"a": 1}
    assert outcome.output.startswith("x" * 100 + "\n[output truncated: 60 more bytes")
    assert outcome.output_truncated and outcome.duration == CLEAN_EXIT.duration


@pytest.mark.parametrize(
    ("exit_info", "status", "fragment"),
    [
        (_killed(signal.SIGXCPU), "timed_out", "CPU time limit"),
        (_killed(signal.SIGKILL, cpu=1.2), "timed_out", "CPU time limit"),
        (_killed(signal.SIGKILL, wall=True), "timed_out", "wall-clock"),
        (_killed(signal.SIGSEGV), "failed", "crashed (SIGSEGV: a memory fault in native code"),
        (_killed(signal.SIGKILL), "memory_exceeded", "out-of-memory killer"),
        (_killed(signal.SIGSYS), "failed", "system call the sandbox does not allow"),
        (_exited(protocol.EXIT_OUT_OF_MEMORY), "memory_exceeded", "did not fit in the memory limit of 100 MB"),
        (_exited(protocol.EXIT_REPORT_FAILED), "failed", "its report could not be sent; this is a fault of"),
        (_exited(protocol.EXIT_NOT_CONFINED), "failed", "the sandbox could not be set up for this run"),
        (_exited(protocol.EXIT_NO_REQUEST), "failed", "did not receive its code"),
        (_exited(3), "failed", "ended without a report (exit status 3); this is a fault of the service"),
    ],
)
def test_classify_from_exit_status_when_there_is_no_report(exit_info: ExitInfo, status: str, fragment: str) -> None:
    outcome = classify(Observed(), exit_info, LIMITS, 1.0)
    assert outcome.status == status and fragment in (outcome.error or "")
    assert outcome.state is None


def test_classify_distrusts_the_childs_report() -> None:
    observed = Observed(report={"status": "interrupted", "error": None})
    assert classify(observed, CLEAN_EXIT, LIMITS, 0.1).error == "the strategy process sent a malformed report"
    observed = Observed(report={"status": "succeeded", "error": None, "state": {"big": "y" * 100}})
    outcome = classify(observed, CLEAN_EXIT, LIMITS, 0.1)
    assert outcome.status == "failed" and "over the cap" in (outcome.error or "") and outcome.state is None
    observed = Observed(report={"status": "succeeded", "error": None, "state": [1]})
    assert classify(observed, CLEAN_EXIT, LIMITS, 0.1).status == "failed"
    observed = Observed(report={"status": "succeeded", "error": None, "state": {}, "result": "r" * 10000})
    assert classify(observed, CLEAN_EXIT, LIMITS, 0.1).result["truncated"] is True
    # A wall kill wins over a report claiming success.
    observed = Observed(report={"status": "succeeded", "error": None, "state": {}})
    assert classify(observed, _killed(signal.SIGKILL, wall=True), LIMITS, 2.5).status == "timed_out"


def test_classify_interrupted_and_lost() -> None:
    assert classify(Observed(interrupted=True), _killed(signal.SIGKILL), LIMITS, 0.2).status == "interrupted"
    assert classify(Observed(zygote_died=True), None, LIMITS, 0.2).status == "failed"
    assert classify(Observed(lost=True), None, LIMITS, 12.0).duration == 12.0
    assert "cannot read (x)" in (classify(Observed(violation="x"), CLEAN_EXIT, LIMITS, 0.1).error or "")


def test_protocol_refuses_oversized_and_malformed_frames() -> None:
    async def read(data: bytes, cap: int) -> bytes | None:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await protocol.read_frame(reader, cap)

    assert asyncio.run(read(protocol.encode({"a": 1}), 100)) == b'{"a":1}'
    assert asyncio.run(read(b"", 100)) is None
    with pytest.raises(protocol.ProtocolError):
        asyncio.run(read(protocol.encode("x" * 200), 100))
    with pytest.raises(protocol.ProtocolError):
        asyncio.run(read(protocol.encode({"a": 1})[:-2], 100))
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(b"[" * 100000)
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(b"\x80not json")


def test_module_view_vets_everything_it_hands_out() -> None:
    stats = guards.guarded_import("statistics")
    assert isinstance(stats, guards.ModuleView)
    assert guards.guarded_getattr(stats, "mean")([1, 3]) == 2
    with pytest.raises(PolicyViolation):
        guards.guarded_getattr(stats, "sys")
    with pytest.raises(PolicyViolation):
        stats.sys  # the IMPORT_FROM path: plain getattr on the view  # noqa: B018
    with pytest.raises(PolicyViolation):
        guards.guarded_setattr(stats, "mean", None)
    with pytest.raises(PolicyViolation):
        guards.guarded_import("os")
    collections_abc = guards.guarded_import("collections.abc", None, None, ("Mapping",))
    assert guards.guarded_getattr(collections_abc, "Mapping") is __import__("collections.abc").abc.Mapping


def test_guards_on_pandas_and_numpy_objects() -> None:
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({"a": [1.0, 2.0]})
    assert guards.guarded_getattr(frame, "to_csv")(index=False) == "a\n1.0\n2.0\n"
    for denied in ("to_pickle", "eval", "query", "style", "plot"):
        with pytest.raises(PolicyViolation):
            guards.guarded_getattr(frame, denied)
    with pytest.raises(PolicyViolation):
        guards.guarded_getattr(frame, "to_csv")("/tmp/x.csv")
    with pytest.raises(PolicyViolation):
        guards.guarded_getattr(pd.DataFrame, "to_csv")
    assert guards.guarded_getattr(frame, "agg")("sum")["a"] == 3.0
    with pytest.raises(PolicyViolation):
        guards.guarded_getattr(frame, "agg")(["sum", "__class__"])
    for denied in ("tofile", "dump", "dumps", "ctypes"):
        with pytest.raises(PolicyViolation):
            guards.guarded_getattr(np.arange(3), denied)
    assert guards.guarded_write(frame) is frame
    assert isinstance(guards.guarded_write(types), guards._ReadOnly)
    with pytest.raises(PolicyViolation):
        guards.guarded_write(json)["loads"] = None  # type: ignore[index]


def test_harden_libraries_removes_pandas_eval_everywhere() -> None:
    # In a child process: hardening patches pandas for good, which this test process must not keep.
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            import pandas as pd

            guards.harden_libraries()
            frame = pd.DataFrame({"a": [1]})
            attempts = (
                lambda: pd.eval("1 + 1"),
                lambda: frame.eval("a + 1"),
                lambda: frame.query("a > 0"),
                lambda: frame.agg("eval", 0, "a + 1"),
            )
            for attempt in attempts:
                try:
                    attempt()
                except PolicyViolation:
                    continue
                os._exit(2)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_classify_makes_every_text_storable() -> None:
    observed = Observed()
    observed.add_output("a\x00b\ud800c", 100)
    observed.report = {"status": "failed", "error": "bad\x00\udfff", "result": {"k\x00": ["v\ud800"]}, "state": None}
    outcome = classify(observed, CLEAN_EXIT, LIMITS, 0.1)
    for text in (outcome.output, outcome.error, json.dumps(outcome.result, ensure_ascii=False)):
        assert "\x00" not in text
        text.encode()  # no unpaired surrogate left
    assert outcome.output == "a\ufffdb?c"
    observed = Observed(report={"status": "succeeded", "error": None, "state": {"x": "\x00"}})
    outcome = classify(observed, CLEAN_EXIT, LIMITS, 0.1)
    assert outcome.status == "failed" and "NUL" in (outcome.error or "") and outcome.state is None


def test_start_warns_for_each_inactive_layer(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from reconciler.sandbox import Sandbox, supervisor
    from reconciler.sandbox.layers import LAYER_NAMES

    class FakeZygote:
        alive = True
        layers = {name: name not in ("seccomp", "cgroup_memory") for name in LAYER_NAMES} | {"user_namespace": False}

    async def fake_spawn(self: Sandbox) -> FakeZygote:
        return FakeZygote()

    monkeypatch.setattr(supervisor.Sandbox, "_spawn_zygote", fake_spawn)
    box = Sandbox(LIMITS)
    assert not any(box.layers.values())  # before start(): nothing is known to be active
    with caplog.at_level("WARNING", logger="reconciler.sandbox.supervisor"):
        asyncio.run(box.start())
    assert box.layers["seccomp"] is False and box.layers["network_namespace"] is True
    warnings = [record.getMessage() for record in caplog.records]
    assert [warning.split(":")[0] for warning in warnings] == [
        "sandbox isolation layer 'cgroup_memory' is NOT active on this host",
        "sandbox isolation layer 'seccomp' is NOT active on this host",
    ]
    assert "RLIMIT_AS" in warnings[0] and "libseccomp" in warnings[1]  # what is lost, what it needs


def test_each_replica_claims_its_own_block_of_uids() -> None:
    """Replicas on one host never hand the same uid to two children: each holds a distinct block
    while it lives, and a block is free again once its holder is gone."""
    from reconciler.sandbox import host

    base = 2_500_000
    first = host.UidBlock.claim(base)
    second = host.UidBlock.claim(base)
    try:
        assert first.count == second.count == host.UIDS_PER_REPLICA
        assert abs(second.first - first.first) >= host.UIDS_PER_REPLICA
        first.close()
        again = host.UidBlock.claim(base)
        assert again.first == first.first
        again.close()
    finally:
        first.close()
        second.close()


def test_a_uid_base_that_leaves_no_room_is_refused_by_the_settings() -> None:
    from reconciler.settings import SettingsError

    with pytest.raises(SettingsError, match=r"(?i)sandbox_uid_base"):
        load_settings(sandbox_uid_base=0)


def test_classify_a_kill_by_the_memory_cgroup_as_memory_exceeded() -> None:
    killed = ExitInfo(status=signal.SIGKILL, wall_killed=False, cpu=0.2, duration=0.3, memory_killed=True)
    outcome = classify(Observed(), killed, LIMITS, 0.3)
    assert outcome.status == "memory_exceeded"
    assert outcome.error is not None and "memory limit exceeded" in outcome.error
    assert f"{LIMITS.memory_mb} MB" in outcome.error


def test_the_replicas_compile_cache_is_the_sandboxs_even_while_empty() -> None:
    """An empty cache is falsy (it has a length): the sandbox must still take it, not make its own.

    Before, every replica's sandbox built a second cache with the default limits and budget: each
    source was compiled twice (the reconcile pass's verdict, then the run), once outside the settings.
    """
    from reconciler.policy.cache import CompiledCache
    from reconciler.policy.pool import CompilePool
    from reconciler.sandbox import Sandbox

    cache = CompiledCache(CompilePool(), max_bytes=1 << 20)
    assert len(cache) == 0 and not cache
    assert Sandbox(SandboxLimits.from_settings(load_settings()), cache).compiler is cache


# -- the child's channel and output, in-process over a socketpair ---------------------------------------


def _frames(sock: socket.socket) -> list[Any]:
    """Every frame sent so far to the other end of `sock`'s pair, decoded."""
    sock.setblocking(False)
    buffer = bytearray()
    with contextlib.suppress(BlockingIOError):
        while chunk := sock.recv(1 << 16):
            buffer += chunk
    return [protocol.decode(frame) for frame in protocol.take_frames(buffer, 1 << 20)]


_REAL_SEND = protocol.send


class _FailingSends:
    """`protocol.send` as it behaves with memory full: the next `failures` sends raise MemoryError
    (or `raised`) before writing anything (encoding the frame is what allocates); `during` runs
    inside the send."""

    def __init__(
        self, failures: int, during: Callable[[], None] = lambda: None, raised: type[BaseException] = MemoryError
    ) -> None:
        self.failures = failures
        self.during = during
        self.raised = raised

    def __call__(self, sock: socket.socket, message: Any) -> None:
        self.during()
        if self.failures > 0:
            self.failures -= 1
            raise self.raised
        _REAL_SEND(sock, message)


def test_output_whose_send_fails_is_kept_and_sent_once_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: `flush` took the chunks out before sending, so a MemoryError in the send lost them."""
    from reconciler.sandbox.child import Channel, Output

    mine, theirs = socket.socketpair()
    with mine, theirs:
        output = Output(Channel(theirs), cap=1 << 16)
        output.write("first\n")
        monkeypatch.setattr(protocol, "send", _FailingSends(failures=2))
        for _ in range(2):
            with pytest.raises(MemoryError):
                output.flush()
        output.write("second\n")
        output.flush()
        output.flush()  # nothing pending: nothing sent
        assert _frames(mine) == [{"t": "out", "data": "first\nsecond\n"}]


@pytest.mark.parametrize("raised", [MemoryError, SystemError])
def test_a_write_that_reaches_the_flush_boundary_keeps_its_text_once_when_the_flush_fails(
    monkeypatch: pytest.MonkeyPatch, raised: type[BaseException]
) -> None:
    """Before: the write kept its text and then raised the flush's MemoryError, so a strategy that
    wrote it again (as after any MemoryError from print) had it sent twice."""
    from reconciler.sandbox.child import _FLUSH_BYTES, Channel, Output

    mine, theirs = socket.socketpair()
    with mine, theirs:
        output = Output(Channel(theirs), cap=1 << 16)
        line = "x" * 1023 + "\n"
        monkeypatch.setattr(protocol, "send", _FailingSends(failures=1, raised=raised))
        for _ in range(_FLUSH_BYTES // len(line)):  # the last one reaches the boundary exactly
            output.write(line)
        assert _frames(mine) == []  # the flush at the boundary failed, and the write returned
        output.write("tail\n")  # still over the boundary: flushed now
        assert _frames(mine) == [{"t": "out", "data": line * (_FLUSH_BYTES // len(line)) + "tail\n"}]


def test_output_in_pieces_sends_everything_pending_in_small_frames() -> None:
    from reconciler.sandbox.child import _PIECE_CHARS, Channel, Output

    mine, theirs = socket.socketpair()
    with mine, theirs:
        output = Output(Channel(theirs), cap=1 << 16)
        text = "".join(f"line {n}\n" for n in range(800))
        output.write(text[:10])
        output.write(text[10:])  # over _FLUSH_BYTES: sent as one frame already
        output.write("tail\n")
        output.flush_in_pieces()
        frames = _frames(mine)
        assert "".join(frame["data"] for frame in frames) == text + "tail\n"
        assert max(len(frame["data"]) for frame in frames[1:]) <= _PIECE_CHARS


def test_a_limit_that_fires_during_a_failed_send_is_raised_by_it_not_by_the_next_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A limit signal during a send is deferred until the frame is out. Before, when that send failed
    (MemoryError), the limit stayed deferred and the next send raised it: the final report's, outside
    the run, which then ended as a fault of the service with no report."""
    from reconciler.sandbox.child import Channel, WallTimeExceeded

    mine, theirs = socket.socketpair()
    with mine, theirs:
        channel = Channel(theirs)
        limit = WallTimeExceeded("wall-clock time limit exceeded")
        monkeypatch.setattr(protocol, "send", _FailingSends(failures=1, during=lambda: channel.interrupt(limit)))
        with pytest.raises(WallTimeExceeded):
            channel.send({"t": "out", "data": "lost to the failed send"})
        monkeypatch.setattr(protocol, "send", _REAL_SEND)
        channel.send({"t": "done", "status": "timed_out"})  # raises nothing now
        assert _frames(mine) == [{"t": "done", "status": "timed_out"}]


def _execution(sock: socket.socket) -> Any:
    from reconciler.sandbox.child import Execution

    return Execution(sock, {"output_bytes": 1 << 16}, compile("", "<strategy>", "exec"))


def test_a_report_that_does_not_fit_keeps_the_output_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """With memory full after the run, the output goes in small pieces and the report without RESULT
    and STATE, the run's own error first: `memory_exceeded`, never an exit without a report."""
    mine, theirs = socket.socketpair()
    with mine, theirs:
        execution = _execution(theirs)
        execution.output.write("printed\n")
        monkeypatch.setattr(protocol, "send", _FailingSends(failures=1))  # the whole output, in one frame
        report = {"t": "done", "status": "failed", "error": "ValueError: bad row\n", "result": [1], "state": None}
        assert execution.send_report(report) == 0
        out, done = _frames(mine)
        assert out == {"t": "out", "data": "printed\n"}
        assert done["status"] == "memory_exceeded" and done["result"] is None and done["state"] is None
        assert done["error"].startswith("ValueError: bad row\nthe strategy used all of its memory"), done["error"]


@pytest.mark.parametrize("failures", [2, 3])
def test_a_system_error_in_place_of_a_memory_error_is_tolerated_by_every_send_of_the_report(
    monkeypatch: pytest.MonkeyPatch, failures: int
) -> None:
    """The full report's send fails (1), then the first piece of the output (2), then the short report
    (3). Before: only the first send's SystemError was caught; the others ended the run without a
    report, as a fault of the service."""
    mine, theirs = socket.socketpair()
    with mine, theirs:
        execution = _execution(theirs)
        execution.output.write("printed\n")
        monkeypatch.setattr(protocol, "send", _FailingSends(failures=failures, raised=SystemError))
        report = {"t": "done", "status": "succeeded", "error": None, "result": [1], "state": {"a": 1}}
        assert execution.send_report(report) == 0
        *_, done = _frames(mine)
        assert done["status"] == "memory_exceeded" and done["state"] is None, done


def test_with_no_memory_at_all_the_report_encoded_in_advance_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    mine, theirs = socket.socketpair()
    with mine, theirs:
        execution = _execution(theirs)
        execution.output.write("printed\n")
        monkeypatch.setattr(protocol, "send", _FailingSends(failures=1 << 30))
        report = {"t": "done", "status": "succeeded", "error": None, "result": [1], "state": {"a": 1}}
        assert execution.send_report(report) == 0
        (done,) = _frames(mine)
        assert done["status"] == "memory_exceeded" and done["state"] is None, done


def test_a_call_whose_request_could_not_be_encoded_leaves_the_channel_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing was sent, so nothing is left to read: the next call goes out and gets its own reply."""
    mine, theirs = socket.socketpair()
    with mine, theirs:
        execution = _execution(theirs)
        real_encode = protocol.encode
        failures = [MemoryError()]

        def encode(message: Any) -> bytes:
            if failures:
                raise failures.pop()
            return real_encode(message)

        monkeypatch.setattr(protocol, "encode", encode)
        with pytest.raises(MemoryError):
            execution.call("get_ticker", {})
        mine.sendall(protocol.encode({"ok": True, "value": "balances"}))
        assert execution.call("get_balances", {}) == "balances"
        assert [frame["method"] for frame in _frames(mine)] == ["get_balances"]


def test_a_call_whose_reply_failed_part_way_refuses_every_later_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the next call read the rest of the broken reply as its own."""
    from reconciler.sandbox.client_proxy import ExchangeError

    mine, theirs = socket.socketpair()
    with mine, theirs:
        execution = _execution(theirs)
        frame = protocol.encode({"ok": True, "value": "x" * 1000})
        mine.sendall(frame)
        real_recv_exactly = protocol._recv_exactly

        def recv_exactly(sock: socket.socket, size: int) -> bytes:
            if size > protocol.HEADER_SIZE:  # the body: half of it read, then out of memory
                real_recv_exactly(sock, size // 2)
                raise MemoryError
            return real_recv_exactly(sock, size)

        monkeypatch.setattr(protocol, "_recv_exactly", recv_exactly)
        with pytest.raises(MemoryError):
            execution.call("get_ticker", {})
        monkeypatch.setattr(protocol, "_recv_exactly", real_recv_exactly)
        mine.sendall(protocol.encode({"ok": True, "value": "balances"}))
        for method in ("get_balances", "get_ticker"):
            with pytest.raises(ExchangeError) as refused:
                execution.call(method, {})
            assert refused.value.kind == "unavailable" and "(get_ticker)" in refused.value.message
        assert [frame["method"] for frame in _frames(mine)] == ["get_ticker"]  # nothing sent after it
        report = execution._broken_report({"status": "succeeded", "error": None}, execution.broken_by)
        assert report["status"] == "memory_exceeded" and report["result"] is None, report
        assert "client call get_ticker could not be read in full (MemoryError" in report["error"], report


def test_a_reply_over_the_cap_refuses_every_later_call() -> None:
    """The cap is checked after the header: the body stays in the socket, unread."""
    from reconciler.sandbox.child import MAX_REPLY_BYTES
    from reconciler.sandbox.client_proxy import ExchangeError

    mine, theirs = socket.socketpair()
    with mine, theirs:
        execution = _execution(theirs)
        mine.sendall(struct.pack(">I", MAX_REPLY_BYTES + 1) + b'{"ok":true,"value":"')
        with pytest.raises(ExchangeError) as first:
            execution.call("get_ticker", {})
        # In the client's terms (it was the internal ProtocolError), saying why and what follows.
        assert first.value.kind == "unavailable", first.value
        assert "exceeds the cap" in first.value.message and "no more client calls" in first.value.message
        with pytest.raises(ExchangeError) as refused:
            execution.call("get_balances", {})
        assert refused.value.kind == "unavailable", refused.value
        report = execution._broken_report({"status": "succeeded", "error": None}, execution.broken_by)
        assert report["status"] == "failed" and "ProtocolError was raised" in report["error"], report


def test_a_call_made_while_another_waits_for_its_reply_sends_nothing_and_fails_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A finaliser (a `__del__`, a weakref callback) run by the collector as the first call starts to
    read its reply makes a call of its own. Before: that call sent its request in the middle of the
    first one's exchange and read the first one's reply as its own (the service, had it still been
    answering the first, would have killed the run as "something it cannot read", naming no call)."""
    from reconciler.sandbox.client_proxy import ExchangeError

    mine, theirs = socket.socketpair()
    with mine, theirs:
        theirs.settimeout(10)  # before the fix, the first call waits for a reply taken by the nested one
        execution = _execution(theirs)
        mine.sendall(protocol.encode({"ok": True, "value": "ticker"}))
        real_recv_exactly = protocol._recv_exactly
        nested: list[BaseException | str] = []
        started: list[bool] = []

        def recv_exactly(sock: socket.socket, size: int) -> bytes:
            if not started:  # once, as a finaliser would run at an allocation of the reading
                started.append(True)
                try:
                    nested.append(execution.call("get_balances", {}))
                except BaseException as exc:
                    nested.append(exc)
            return real_recv_exactly(sock, size)

        monkeypatch.setattr(protocol, "_recv_exactly", recv_exactly)
        assert execution.call("get_ticker", {}) == "ticker"  # its own reply, read whole
        (refused,) = nested
        assert isinstance(refused, ExchangeError) and refused.kind == "unavailable", refused
        assert "get_ticker was waiting" in refused.message and "may have taken effect" in refused.message
        with pytest.raises(ExchangeError) as later:
            execution.call("get_balances", {})
        assert later.value.kind == "unavailable" and "(get_ticker)" in later.value.message, later.value
        assert [frame["method"] for frame in _frames(mine)] == ["get_ticker"]  # nothing sent after it
        report = execution._broken_report({"status": "succeeded", "error": None}, execution.broken_by)
        assert report["status"] == "failed" and report["result"] is None, report
        error = report["error"]
        assert "get_balances was made while the client call get_ticker was waiting" in error, error
        assert "get_ticker may have taken effect at the exchange" in error, error


def test_a_call_made_once_the_reply_is_read_whole_goes_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """A finaliser that runs while the reply is decoded finds the exchange over: its call is a call."""
    mine, theirs = socket.socketpair()
    with mine, theirs:
        execution = _execution(theirs)
        mine.sendall(protocol.encode({"ok": True, "value": "ticker"}))
        mine.sendall(protocol.encode({"ok": True, "value": "balances"}))
        real_decode = protocol.decode
        nested: list[Any] = []

        def decode(body: bytes) -> Any:
            if not nested:
                nested.append(None)
                nested.append(execution.call("get_balances", {}))
            return real_decode(body)

        monkeypatch.setattr(protocol, "decode", decode)
        assert execution.call("get_ticker", {}) == "ticker"
        assert nested == [None, "balances"] and execution.broken_by is None
        monkeypatch.setattr(protocol, "decode", real_decode)
        assert [frame["method"] for frame in _frames(mine)] == ["get_ticker", "get_balances"]

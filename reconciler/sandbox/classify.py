"""From what the supervisor observed of one execution to the `ExecutionOutcome` the loop records.

Pure: no I/O, so every path is unit-testable. The child's final report is untrusted input: its fields
are type-checked and size-checked again here, and the exit status (from the zygote, trusted) wins over
anything the child claims when the two disagree about how it ended.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass, field
from typing import Any

from reconciler.outcome import ExecutionOutcome
from reconciler.sandbox import protocol
from reconciler.sandbox.limits import SandboxLimits

_REPORTABLE = frozenset({"succeeded", "failed", "timed_out", "memory_exceeded"})
_ERROR_CAP = 32768


@dataclass(frozen=True)
class ExitInfo:
    """How the child process ended, as the zygote reaped it."""

    status: int  # raw wait status
    wall_killed: bool
    cpu: float
    duration: float
    memory_killed: bool = False  # the child's memory cgroup killed it (its OOM counter moved)
    # The child's own accounting as the zygote reaped it (for profiling; `cpu` is their sum).
    user: float = 0.0
    system: float = 0.0
    minor_faults: int = 0


@dataclass
class Observed:
    """Everything the supervisor saw of one execution."""

    output: list[str] = field(default_factory=list)
    output_bytes: int = 0
    output_dropped: int = 0
    report: dict[str, Any] | None = None
    violation: str | None = None
    interrupted: bool = False
    zygote_died: bool = False
    lost: bool = False  # the zygote never reported the exit within the supervisor's own deadline

    def add_output(self, text: str, cap: int) -> None:
        data = clean_text(text).encode()
        room = cap - self.output_bytes
        if len(data) > room:
            self.output_dropped += len(data) - max(room, 0)
            data = data[: max(room, 0)]
        if data:
            self.output.append(data.decode("utf-8", "ignore"))
            self.output_bytes += len(data)


def clean_text(text: str) -> str:
    """Text PostgreSQL can store: no NUL characters, no unpaired surrogates (both come through JSON's
    \\u escapes from a hostile child, and either would make recording the execution fail)."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode()
    return text


def clean_json(value: Any, depth: int = 0) -> tuple[Any, bool]:
    """`value` (decoded JSON) with every string cleaned, and whether anything had to change."""
    if depth > 200:
        raise RecursionError("nested too deeply")
    if isinstance(value, str):
        cleaned = clean_text(value)
        return cleaned, cleaned != value
    if isinstance(value, list):
        items = [clean_json(item, depth + 1) for item in value]
        return [item for item, _ in items], any(changed for _, changed in items)
    if isinstance(value, dict):
        pairs = [(clean_json(key, depth + 1), clean_json(item, depth + 1)) for key, item in value.items()]
        changed = any(key[1] or item[1] for key, item in pairs)
        return {key[0]: item[0] for key, item in pairs}, changed
    return value, False


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# Built once: `json.dumps` with any non-default argument builds an encoder at every call.
_SIZER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


def _json_size(value: Any) -> int:
    return len(_SIZER.encode(value).encode("utf-8", "replace"))


def _from_report(report: dict[str, Any], limits: SandboxLimits) -> tuple[str, str | None, Any, Any]:
    status = report.get("status")
    error = report.get("error")
    if status not in _REPORTABLE or not (error is None or isinstance(error, str)):
        return "failed", "the strategy process sent a malformed report", None, None
    if isinstance(error, str):
        error = clean_text(error if len(error) <= _ERROR_CAP else error[:_ERROR_CAP] + "\n[error shortened]")
    result = report.get("result")
    try:
        result, _changed = clean_json(result)
        if _json_size(result) > limits.result_bytes + 4096:  # the child truncates; never trust it did
            result = {"truncated": True, "original_bytes": _json_size(result), "preview": ""}
    except (TypeError, ValueError, RecursionError):
        result = None
    state = report.get("state")
    if status == "succeeded":
        if not isinstance(state, dict):
            return "failed", "STATE must be a dict (JSON object); the previous STATE is kept", result, None
        try:
            _cleaned, changed = clean_json(state)
            size = _json_size(state)
        except (TypeError, ValueError, RecursionError):
            return "failed", "STATE is not JSON; the previous STATE is kept", result, None
        if changed:
            return (
                "failed",
                (
                    "STATE contains NUL characters or unpaired surrogates, which cannot be "
                    "stored; the previous STATE is kept"
                ),
                result,
                None,
            )
        if size > limits.state_bytes:
            return (
                "failed",
                (f"STATE is {size} bytes, over the cap of {limits.state_bytes} bytes; the previous STATE is kept"),
                result,
                None,
            )
    else:
        state = None
    return str(status), error, result, state


_NOT_YOURS = "this is a fault of the service, not of the strategy; the next run starts normally"


def _killed(number: int, limits: SandboxLimits) -> tuple[str, str]:
    """A child ended by a signal that no limit of ours sends: say what it means for the author."""
    name = _signal_name(number)
    if number in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE):
        return "failed", (
            f"the strategy process crashed ({name}: a memory fault in native code such as numpy or pandas); "
            "the output shows how far it got: change the operation that crashed"
        )
    if number == signal.SIGABRT:
        return "failed", (
            "the strategy process was aborted (SIGABRT) by a native library, often for lack of memory "
            f"(the limit is {limits.memory_mb} MB): use less memory"
        )
    if number == signal.SIGSYS:
        return "failed", "the strategy process was stopped for a system call the sandbox does not allow (SIGSYS)"
    if number == signal.SIGKILL:
        return "memory_exceeded", (
            f"the strategy process was killed (SIGKILL) outside the time limits, by the out-of-memory killer "
            f"(the limit is {limits.memory_mb} MB): use less memory"
        )
    return "failed", f"the strategy process was ended by {name}, which the sandbox does not send; {_NOT_YOURS}"


def _exited(code: int, limits: SandboxLimits) -> tuple[str, str]:
    """A child that exited without a report: its exit code says at which step (protocol.EXIT_*)."""
    if code == protocol.EXIT_OUT_OF_MEMORY:
        return "memory_exceeded", (
            f"the strategy used all of its memory, and its report (output, RESULT, STATE) did not fit in the "
            f"memory limit of {limits.memory_mb} MB: use less memory, and keep RESULT and STATE small"
        )
    if code == protocol.EXIT_REPORT_FAILED:
        return "failed", f"the strategy's code finished, but its report could not be sent; {_NOT_YOURS}"
    if code == protocol.EXIT_NOT_CONFINED:
        return "failed", f"the sandbox could not be set up for this run, so nothing of it ran; {_NOT_YOURS}"
    if code == protocol.EXIT_NO_REQUEST:
        return "failed", f"the strategy process did not receive its code, so nothing of it ran; {_NOT_YOURS}"
    return "failed", f"the strategy process ended without a report (exit status {code}); {_NOT_YOURS}"


def classify(
    observed: Observed, exit_info: ExitInfo | None, limits: SandboxLimits, duration: float
) -> ExecutionOutcome:
    result: Any = None
    state: dict[str, Any] | None = None
    error: str | None
    report_error = observed.report.get("error") if observed.report else None
    if observed.interrupted:
        status, error = "interrupted", "the execution was interrupted (the replica stopped or cancelled it)"
    elif observed.zygote_died:
        status, error = "failed", f"the service's sandbox process stopped during this run; {_NOT_YOURS}"
    elif observed.lost or exit_info is None:
        status, error = "failed", f"the service's sandbox lost track of this run; {_NOT_YOURS}"
    elif exit_info.wall_killed:
        status = "timed_out"
        error = f"wall-clock time limit exceeded ({limits.wall_seconds:g} s): the process was killed"
        if isinstance(report_error, str) and observed.report and observed.report.get("status") == "timed_out":
            error = report_error[:_ERROR_CAP]
    elif exit_info.memory_killed and observed.report is None:
        status = "memory_exceeded"
        error = f"memory limit exceeded ({limits.memory_mb} MB, with kernel memory): the process was killed"
    elif observed.violation is not None:
        status = "failed"
        error = f"the strategy process sent the service something it cannot read ({observed.violation})"
    elif observed.report is not None:
        status, error, result, state = _from_report(observed.report, limits)
    elif os.WIFSIGNALED(exit_info.status):
        number = os.WTERMSIG(exit_info.status)
        cpu_spent = exit_info.cpu >= limits.cpu_seconds - 0.05
        if number == signal.SIGXCPU or (number == signal.SIGKILL and cpu_spent):
            status = "timed_out"
            error = f"CPU time limit exceeded ({limits.cpu_seconds} s): the process was killed"
        else:
            status, error = _killed(number, limits)
    else:
        code = os.WEXITSTATUS(exit_info.status) if os.WIFEXITED(exit_info.status) else exit_info.status
        status, error = _exited(code, limits)

    dropped = observed.output_dropped
    if observed.report is not None:
        reported = observed.report.get("dropped")
        if isinstance(reported, int) and reported > 0:
            dropped += reported
    output = "".join(observed.output)
    if dropped:
        cap = limits.output_bytes
        output += f"\n[output truncated: {dropped} more bytes over the {cap}-byte cap were dropped]\n"
    return ExecutionOutcome(
        status=status,  # type: ignore[arg-type]
        duration=exit_info.duration if exit_info is not None else duration,
        output=output,
        output_truncated=dropped > 0,
        error=error,
        result=result,
        state=state,
    )

"""A compile worker: a separate process that compiles strategies under the policy, one at a time.

`python -m reconciler.policy.worker '<json limits>'`, started and fed by `reconciler.policy.pool`.
Compiling is pure CPU on untrusted input: 256 KiB of the wrong code takes tens of seconds and holds
the GIL (`ast.parse` and `compile` are single C calls), and CPython's AST constructor is not safe to
run in two threads at once on some versions. In a process of its own, at a lower CPU priority and
under a memory limit, none of that reaches the API's or the replica's event loop.

Frames on stdin/stdout: a 4-byte big-endian length and that many bytes. Request: a JSON header
(`{"mode": "check" | "compile"}`) then the source as UTF-8. Answer: a JSON header (`{"ok": true,
"size": n}` or `{"ok": false, "message", "line", "column"}`) then the marshalled code object (empty
unless mode is "compile" and it compiled); `"exiting": true` when the worker ends after this answer.
"""

from __future__ import annotations

import contextlib
import json
import marshal
import os
import resource
import signal
import struct
import sys
from typing import Any, BinaryIO

from reconciler.policy.compile import compile_strategy
from reconciler.policy.errors import PolicyError

_LENGTH = struct.Struct(">I")
MAX_REQUEST_BYTES = 16 << 20
# After compiling a source this large, the worker exits (saying so in its answer) rather than keep the
# memory the compile grew it by; the pool starts a fresh one for the next request.
RECYCLE_SOURCE_BYTES = 64 << 10


class _TooLong(BaseException):  # not an Exception: no `except Exception` on the way swallows it
    pass


def read_frame(stream: BinaryIO) -> bytes | None:
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(header)
    if length > MAX_REQUEST_BYTES:
        raise ValueError(f"frame of {length} bytes")
    body = stream.read(length)
    if len(body) < length:
        return None
    return body


def write_frame(stream: BinaryIO, body: bytes) -> None:
    stream.write(_LENGTH.pack(len(body)) + body)


def too_long_message(seconds: float) -> str:
    return (
        f"code takes too long to compile (more than {seconds:g} s of CPU time): "
        "shorten it, or move data tables out of the code into CONFIG"
    )


def too_big_message(size: int, limit: int) -> str:
    return (
        f"the compiled code is {size} bytes, over the limit of {limit} bytes: shorten it, "
        "or move data tables out of the code into CONFIG"
    )


def _compile(source: str, mode: str, limits: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    # CPU time, not wall time: a busy host must not turn valid code into "too long".
    signal.setitimer(signal.ITIMER_VIRTUAL, float(limits["cpu_seconds"]))
    try:
        data = marshal.dumps(compile_strategy(source))
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
    if len(data) > int(limits["max_bytes"]):
        return {"ok": False, "message": too_big_message(len(data), int(limits["max_bytes"]))}, b""
    return {"ok": True, "size": len(data)}, data if mode == "compile" else b""


def _on_cpu_limit(signum: int, frame: Any) -> None:
    raise _TooLong


def main() -> None:
    limits = json.loads(sys.argv[1])
    with contextlib.suppress(OSError):
        os.nice(10)  # the event loops and the strategies come first
    memory = int(limits["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGVTALRM, _on_cpu_limit)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = read_frame(stdin)
        source = read_frame(stdin) if header is not None else None
        if header is None or source is None:
            return  # the pool closed the pipe (or its process is gone)
        mode = str(json.loads(header).get("mode", "check"))
        code = b""
        exit_after = False
        try:
            answer, code = _compile(source.decode("utf-8", "surrogatepass"), mode, limits)
        except PolicyError as exc:
            answer = {"ok": False, "message": exc.message, "line": exc.line, "column": exc.column}
        except _TooLong:
            answer = {"ok": False, "message": too_long_message(float(limits["cpu_seconds"]))}
        except MemoryError:
            answer = {"ok": False, "message": "the code is too large to compile: shorten it"}
            exit_after = True  # start the next compile in a fresh process
        exit_after = exit_after or len(source) > RECYCLE_SOURCE_BYTES
        answer["exiting"] = exit_after
        write_frame(stdout, json.dumps(answer).encode())
        write_frame(stdout, code)
        stdout.flush()
        if exit_after:
            return


if __name__ == "__main__":
    main()

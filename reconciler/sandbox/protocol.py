"""Length-prefixed JSON frames between the supervisor and a sandboxed child.

Every frame is a 4-byte big-endian length and that many bytes. Frames from the child are untrusted:
the reader refuses a length above its cap before reading the body, and decodes JSON only (never
pickle), so a hostile child can cost the supervisor at most one capped buffer and one `json.loads`.
The single binary frame (the marshalled code object) only ever goes from the supervisor to the child.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size

# How a child that could not send its report says why, in its exit status (see `classify`).
EXIT_NOT_CONFINED = 71  # the confinement could not be set up: nothing of the strategy ran
EXIT_NO_REQUEST = 72  # the request (code, CONFIG, STATE) never arrived whole: nothing ran
EXIT_REPORT_FAILED = 73  # the strategy ran, but its report could not be built or sent
EXIT_OUT_OF_MEMORY = 74  # the strategy ran, but its report did not fit in the memory limit


class ProtocolError(Exception):
    """A peer sent something that is not a well-formed frame within the size cap."""


# ASCII escapes: a str with an unpaired surrogate (legal in Python, e.g. "\ud800" in a RESULT) still
# encodes; the receiver decides what to keep (see classify.clean_text). Built once: `json.dumps` with
# any non-default argument builds an encoder at every call, and every execution encodes a request.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def encode(message: Any) -> bytes:
    body = _ENCODER.encode(message).encode()
    return _HEADER.pack(len(body)) + body


def encode_bytes(body: bytes) -> bytes:
    return _HEADER.pack(len(body)) + body


def decode(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested past the C stack guard
        raise ProtocolError(f"malformed JSON frame: {type(exc).__name__}") from None


# -- blocking side (the child) ------------------------------------------------------------------------


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(min(size - len(chunks), 1 << 20))
        if not chunk:
            raise ProtocolError("connection closed mid-frame")
        chunks += chunk
    return bytes(chunks)


def recv_frame(sock: socket.socket, max_size: int) -> bytes:
    (size,) = _HEADER.unpack(_recv_exactly(sock, _HEADER.size))
    if size > max_size:
        raise ProtocolError(f"frame of {size} bytes exceeds the cap of {max_size}")
    return _recv_exactly(sock, size)


def send(sock: socket.socket, message: Any) -> None:
    sock.sendall(encode(message))


# -- asyncio side (the supervisor) --------------------------------------------------------------------


def take_frames(buffer: bytearray, max_size: int) -> list[bytes]:
    """The whole frames at the front of `buffer`, removed from it; what follows them stays. A length
    above `max_size` raises ProtocolError before its body is waited for."""
    frames = []
    offset = 0
    while len(buffer) - offset >= _HEADER.size:
        (size,) = _HEADER.unpack_from(buffer, offset)
        if size > max_size:
            raise ProtocolError(f"frame of {size} bytes exceeds the cap of {max_size}")
        end = offset + _HEADER.size + size
        if len(buffer) < end:
            break
        frames.append(bytes(buffer[offset + _HEADER.size : end]))
        offset = end
    if offset:
        del buffer[:offset]
    return frames


async def read_frame(reader: asyncio.StreamReader, max_size: int) -> bytes | None:
    """One frame, or None on a clean end of stream; ProtocolError on a truncated or oversized frame."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("connection closed mid-header") from None
        return None
    (size,) = _HEADER.unpack(header)
    if size > max_size:
        raise ProtocolError(f"frame of {size} bytes exceeds the cap of {max_size}")
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise ProtocolError("connection closed mid-frame") from None

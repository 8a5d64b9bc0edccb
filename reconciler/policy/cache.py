"""A replica's compiled strategies: compiled once per distinct source, kept within a byte budget.

Many strategies share one source (an example, a template), and each runs every few seconds: the
marshalled code object is kept by the source's digest, least recently used first out, and the whole
cache never holds more than `max_bytes` (an entry count would let a few huge code objects grow the
replica by hundreds of MB). Policy errors are remembered too (as their message), so a pass over
thousands of strategies sharing broken code compiles it once. Concurrent requests for one source
wait for the same compile.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict

from reconciler.policy.errors import PolicyError
from reconciler.policy.pool import CompilePool

_ENTRY_OVERHEAD = 256  # the key, the entry and the dictionary slot, roughly


class CompiledCache:
    def __init__(self, pool: CompilePool, max_bytes: int = 64 << 20) -> None:
        self.pool = pool
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, bytes | PolicyError] = OrderedDict()
        self._bytes = 0
        self._pending: dict[bytes, asyncio.Future[bytes | PolicyError]] = {}

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    async def compile(self, code: str) -> bytes:
        """The marshalled code object of `code`, or PolicyError (a fresh one each time)."""
        outcome = await self._lookup(code)
        if isinstance(outcome, PolicyError):
            # A new exception per caller: re-raising one instance would grow its traceback forever.
            raise PolicyError(outcome.message, outcome.line, outcome.column)
        return outcome

    async def verdict(self, code: str) -> str | None:
        """The policy's message for `code`, or None when it compiles (for the reconcile pass)."""
        outcome = await self._lookup(code)
        return str(outcome) if isinstance(outcome, PolicyError) else None

    async def _lookup(self, code: str) -> bytes | PolicyError:
        key = hashlib.sha256(code.encode("utf-8", "surrogatepass")).digest()
        cached = self._entries.get(key)
        if cached is not None:
            self._entries.move_to_end(key)
            return cached
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bytes | PolicyError] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            try:
                outcome: bytes | PolicyError = await self.pool.compile(code)
            except PolicyError as exc:
                outcome = PolicyError(exc.message, exc.line, exc.column)  # no traceback kept alive
            future.set_result(outcome)
        except asyncio.CancelledError:
            future.cancel()  # only at shutdown: the waiters are being cancelled too
            raise
        except BaseException as exc:  # the pool could not run at all: every waiter sees why
            future.set_exception(exc)
            future.exception()  # retrieved: nobody may be waiting
            raise
        finally:
            del self._pending[key]
        self._store(key, outcome)
        return outcome

    def _store(self, key: bytes, outcome: bytes | PolicyError) -> None:
        size = _size(outcome)
        if size > self.max_bytes:
            return  # larger than the whole budget: compiled for this run only
        self._entries[key] = outcome
        self._bytes += size
        while self._bytes > self.max_bytes:
            _old_key, old = self._entries.popitem(last=False)
            self._bytes -= _size(old)


def _size(outcome: bytes | PolicyError) -> int:
    if isinstance(outcome, PolicyError):
        return len(outcome.message) + _ENTRY_OVERHEAD
    return len(outcome) + _ENTRY_OVERHEAD

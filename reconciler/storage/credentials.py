"""Loading, checking and rotating the sealed exchange credentials stored in `strategy_credentials`.

The database side of `reconciler.crypto` (which stays pure so the API can seal at deploy without a
connection). Decrypted credentials exist only in the broker of the replica running the execution.
Each function is one or more transactions through `Database.run`: driver errors leave as `StoreError`s,
decryption errors (`CryptoError`) pass through unchanged.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reconciler.crypto import CredentialCipher, Credentials, DecryptionError, Sealed
from reconciler.storage.db import Database
from reconciler.storage.statements import exchange as queries


async def load_credentials(engine: AsyncEngine, cipher: CredentialCipher, strategy_id: str) -> Credentials | None:
    """This strategy's decrypted credentials, None if it has none; raises CryptoError if they do not open."""

    async def work(conn: AsyncConnection) -> Sealed | None:
        row = (await conn.execute(queries.SELECT_CREDENTIALS, {"strategy_id": strategy_id})).first()
        return None if row is None else Sealed(key_id=row.key_id, ciphertext=bytes(row.credentials))

    sealed = await Database(engine).run(work)
    return None if sealed is None else cipher.decrypt(sealed, strategy_id=strategy_id)


async def check_key_ids(engine: AsyncEngine, cipher: CredentialCipher) -> dict[str, int]:
    """At start-up: raise CryptoError unless every key id in use is configured and opens its rows.

    A key id that ENCRYPTION_KEY does not list is named; for each listed one, one row is opened, so
    wrong key material under the right id is found now rather than in the middle of a run. Returns the
    row count per key id (an operator sees how far a rotation has got).
    """

    async def work(conn: AsyncConnection) -> dict[str, int]:
        counts = {key_id: count for key_id, count in (await conn.execute(queries.COUNT_CREDENTIALS_BY_KEY)).all()}
        missing = sorted(set(counts) - set(cipher.key_ids))
        if missing:
            raise DecryptionError(
                f"strategy credentials are sealed with key id(s) {', '.join(map(repr, missing))}"
                f" that ENCRYPTION_KEY does not list (configured: {', '.join(cipher.key_ids) or 'none'});"
                " add the old key after the new one"
            )
        for key_id in counts:
            row = (await conn.execute(queries.SELECT_ONE_CREDENTIAL_WITH_KEY, {"key_id": key_id})).one()
            cipher.decrypt(Sealed(key_id, bytes(row.credentials)), strategy_id=row.strategy_id)
        return counts

    return await Database(engine).run(work)


async def rotate(engine: AsyncEngine, cipher: CredentialCipher, *, batch_size: int = 100) -> int:
    """Re-seal every `strategy_credentials` row under the current (first) key; returns rows re-sealed.

    Batches of rows are locked, re-sealed and committed one batch per transaction, so a rotation of
    many rows does not hold one long lock; running it twice is harmless. A row that does not open
    stops the rotation with DecryptionError naming its strategy, before anything of its batch commits.
    """
    db = Database(engine)
    done = 0
    after: str | None = None
    while True:

        async def work(conn: AsyncConnection, after: str | None = after) -> list[str]:
            batch = {"batch": batch_size, "after": after}
            rows = (await conn.execute(queries.LOCK_CREDENTIALS_BATCH, batch)).all()
            for row in rows:
                sealed = cipher.reseal(Sealed(row.key_id, bytes(row.credentials)), strategy_id=row.strategy_id)
                await conn.execute(
                    queries.UPDATE_CREDENTIALS,
                    {"strategy_id": row.strategy_id, "key_id": sealed.key_id, "credentials": sealed.ciphertext},
                )
            return [row.strategy_id for row in rows]

        ids = await db.run(work)
        done += len(ids)
        if len(ids) < batch_size:
            return done
        after = ids[-1]

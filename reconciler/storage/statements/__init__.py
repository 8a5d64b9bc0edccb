"""Every SQL statement, named, grouped by who runs it: the API (`api`), a replica (`replica`), the
exchange layer (`exchange`), the risk guard and alert producers (`risk`) and the alert sender (`alerts`).
All of them PostgreSQL text, as an operator reads them in `pg_stat_statements` and psql; statements
whose shape depends on the call are small functions that join fixed fragments, never a value.

Lock order. Every transaction that locks more than one of these takes them in this order, and never
waits for a lock of an earlier level while it holds one of a later level:

1. a `strategies` row. The API's spec writes and the reconcile pass take FOR NO KEY UPDATE (the pass
   with SKIP LOCKED). Inserting a row that references a strategy (an execution, a run request, an
   order, credentials, paper rows) takes FOR KEY SHARE through the foreign key, which conflicts with
   neither; only a DELETE (finalizing a deletion) takes FOR UPDATE, and only while its transaction
   holds the strategy's status row with nothing in flight.
2. a `strategy_status` row: the strategy's lock among replicas. Statements that wait for several
   take them in `strategy_id` order; claims and lost-marking take them with SKIP LOCKED.
3. `executions` rows (an outcome batch locks their status rows first, in the statement that records it:
   COMPLETE_EXECUTIONS).
4. one strategy's exchange rows. A paper call locks its `paper_orders` (in book order), then its
   `paper_balances` (in currency order), then updates the `orders` records of the orders it filled
   or cancelled. The broker's own writes of `orders` (a request, an answer) touch no paper row; a
   fenced order insert holds its execution row FOR SHARE (level 3) before it writes `orders`.

The one statement that touches a level-1 row after a level-2 row is a claim: it holds the status rows
it claimed (SKIP LOCKED) and its INSERT takes FOR KEY SHARE on their strategies. That can wait only
for a DELETE of the strategy, which holds the status row the claim would have had to skip, so it is
never a cycle. Before this order was written down, a reconcile pass took FOR UPDATE on strategies
and deadlocked with claims (`tests/integration/test_lock_order.py` races the two).

The one statement that waits for a level-3 row after level-4 rows is a paper call's fence check
(`exchange.SELECT_FENCE_HOLDS`, FOR SHARE, the last statement before its commit, so that the lock is
held for the commit only and not while the call asks the price feed). No statement holding an
`executions` row ever waits for paper rows (lease renewals, lost-marking, outcomes and wallet values
touch none), so it is never a cycle.

Partition maintenance (`partitions`) takes table locks, never row locks: ATTACH takes SHARE ROW
EXCLUSIVE on `strategies` and `strategy_status` (adding the foreign keys' triggers), and a drop takes
ACCESS EXCLUSIVE on `executions` before anything else. It holds no row lock when it asks for them and
waits at most `partitions.LOCK_TIMEOUT`, so a claim is delayed by at most that, once a day.

Whatever deadlock remains is retried at once by `reconciler.storage.db.Database.run`.
"""

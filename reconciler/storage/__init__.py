"""The storage layer: the one owner of every conversation with PostgreSQL.

Engines and the transaction boundary (`db`), every SQL statement (`statements`, grouped by who runs
it), and one store per caller: the API (`api_store`), a replica (`replica_store`), the exchange layer
(`credentials`, and the orders and paper wallet statements), plus the migrator (`migrate`).
Nothing outside this package imports a database driver or writes SQL.
"""

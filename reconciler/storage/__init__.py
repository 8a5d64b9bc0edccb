"""The storage layer: the one owner of every conversation with PostgreSQL.

Engines and the transaction boundary (`db`), every SQL statement (`statements`, grouped by who runs
it), and one store per caller: the API (`api_store`), a replica (`replica_store`), the exchange layer
(`exchange_store`: orders, the paper book, the risk guard; `credentials`), the alert sender
(`alert_store`), plus the migrator (`migrate`) and the embedded server's database (`bootstrap`).
Nothing outside this package imports a database driver or writes SQL.
"""

"""Every SQL statement, named, grouped by who runs it: the API (`api`), a replica (`replica`) and the
exchange layer (`exchange`)."""

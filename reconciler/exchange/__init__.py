"""The exchange layer: what answers a sandboxed strategy's `client.<method>(...)` calls.

- `broker`: BrokerFactory / per-execution sessions: limits, rate limits, the orders record.
- `coindcx`: the async CoinDCX REST client (signing in `signing`, error kinds in `errors`).
- `paper`: the paper exchange (same methods and shapes), priced by a `feed` (simulated or CoinDCX).
- `credentials`: loading, checking and rotating sealed credentials (sealing itself: `reconciler.crypto`).
"""

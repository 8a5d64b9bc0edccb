"""strategy-executor: run users' trading strategies on a schedule, each in a sandboxed process."""

__version__ = "0.1.0"

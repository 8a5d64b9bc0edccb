"""Fixtures shared by several end-to-end modules."""

from tests.e2e.exchange_service import exchange, exchange_service

__all__ = ["exchange", "exchange_service"]

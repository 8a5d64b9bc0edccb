"""The two ways the language policy says no: before the code runs, and while it runs."""

from __future__ import annotations


class PolicyError(Exception):
    """The code does not compile or breaks the policy; `line` is 1-based, `column` 0-based."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column

    def __str__(self) -> str:
        if self.line is None:
            return self.message
        return f"line {self.line}, column {self.column or 0}: {self.message}"


class PolicyViolation(Exception):
    """Raised at run time by the guards when a strategy reaches for something the policy forbids."""

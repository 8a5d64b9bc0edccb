"""The reconcile pass's verdict on a spec's code: the policy's message, remembered per source."""

from __future__ import annotations

from collections import OrderedDict

from reconciler import service


def test_verdict_names_line_and_column_and_is_remembered(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    calls: list[str] = []
    real = service.check_code

    def counting(code: str) -> None:
        calls.append(code)
        real(code)

    monkeypatch.setattr(service, "check_code", counting)
    monkeypatch.setattr(service, "_verdicts", OrderedDict())
    bad = "x = 1\nimport os\n"
    first = service.policy_verdict(bad)
    assert first is not None and "line 2" in first and "os" in first
    assert service.policy_verdict(bad) == first
    assert service.policy_verdict("RESULT = 1\n") is None
    assert service.policy_verdict("RESULT = 1\n") is None
    assert calls == [bad, "RESULT = 1\n"]

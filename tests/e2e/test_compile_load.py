"""The replica stays responsive whatever is deployed (the real `serve` process, its real compile
workers, a real sandbox): three concurrent deploys of 256 KiB of slow-to-compile code while a
2-second strategy runs on a 3-second schedule. No 5xx, no tick of the bystander late by more than one
second, and `/health` answers within a second throughout.

The workload stays well below capacity on purpose: one compile worker (so one core at most, at a
lower priority), a CPU limit of 2 s per compile, a strategy that sleeps rather than computes.
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import TOKEN, connect, service_env
from tests.e2e.test_service import start_serve

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {TOKEN}"}
BYSTANDER = "import time\ntime.sleep(2)\nSTATE['runs'] = STATE.get('runs', 0) + 1\nRESULT = STATE['runs']\n"
INTERVAL = 3


def slow_source(index: int) -> str:
    """256 KiB of attribute chains: RestrictedPython needs tens of CPU seconds to rewrite them."""
    head = f"# slow source {index}\n"
    line = "x = a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p\n"
    return head + line * ((256 * 1024 - len(head)) // len(line))


class HealthProbe(threading.Thread):
    """GET /health every 0.2 s; remembers every answer's status and latency."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=10) as client:
            while not self.done.is_set():
                started = time.monotonic()
                try:
                    status = client.get("/health").status_code
                except httpx.HTTPError:
                    status = 0
                self.samples.append((time.monotonic() - started, status))
                self.done.wait(0.2)


def test_slow_deploys_do_not_stall_the_service(database_url: str, tmp_path: Path) -> None:
    env = service_env(database_url, compile_workers=1, compile_timeout_seconds=2, max_wall_time_seconds=10)
    service, base = start_serve(env, tmp_path, "serve")
    conn = connect(database_url)
    try:
        with httpx.Client(base_url=base, headers=AUTH, timeout=120) as client:
            body = {"strategy_id": "bystander", "user_id": "u1", "code": BYSTANDER, "execution_interval": INTERVAL}
            assert client.post("/strategies/deploy", json=body).status_code == 201

            def runs() -> int:
                row = conn.execute("SELECT count(*) FROM executions WHERE strategy_id = 'bystander'").fetchone()
                return int(row[0]) if row else 0

            deadline = time.monotonic() + 60
            while runs() < 2:  # the schedule is running before the load starts
                assert time.monotonic() < deadline, service.log()[-3000:]
                time.sleep(0.2)

            (window_start,) = conn.execute("SELECT now()").fetchone()  # type: ignore[misc]
            probe = HealthProbe(base)
            probe.start()

            def deploy(index: int) -> httpx.Response:
                body = {"strategy_id": f"slow-{index}", "user_id": "u2", "code": slow_source(index)}
                return client.post("/strategies/deploy", json={**body, "execution_interval": 60})

            deploys_started = time.monotonic()
            with ThreadPoolExecutor(max_workers=3) as threads:
                answers = list(threads.map(deploy, range(3)))
            deploys_took = time.monotonic() - deploys_started
            # Ticks after the last answer count too; and the window spans at least four intervals,
            # so it holds three whole ticks however quickly the deploys were refused.
            time.sleep(max(INTERVAL + 1, 4 * INTERVAL + 1 - deploys_took))
            probe.done.set()
            probe.join(15)
            (window_end,) = conn.execute("SELECT now()").fetchone()  # type: ignore[misc]

        # No 5xx: each slow deploy is a clear 422 (its compile ran out of CPU time, in a worker).
        for answer in answers:
            assert answer.status_code == 422, answer.text
            (detail,) = answer.json()["detail"]
            assert detail["field"] == "code"
            assert detail["reason"].startswith("code takes too long to compile"), detail
        # /health answered within a second throughout.
        assert len(probe.samples) >= 10
        assert [status for _, status in probe.samples if status != 200] == []
        slowest = max(latency for latency, _ in probe.samples)
        assert slowest < 1.0, f"/health took {slowest:.2f} s"
        # Every tick of the bystander in the window ran, none late by more than a second.
        ticks = conn.execute(
            "SELECT scheduled_for, claimed_at, status FROM executions "
            "WHERE strategy_id = 'bystander' AND trigger = 'schedule' AND scheduled_for BETWEEN %s AND %s "
            "ORDER BY scheduled_for",
            (window_start, window_end - timedelta(seconds=INTERVAL)),
        ).fetchall()
        assert len(ticks) >= 3, ticks
        lateness = max((claimed - scheduled).total_seconds() for scheduled, claimed, _ in ticks)
        print(  # the figures, for `pytest -s`
            f"\n3 slow deploys answered in {deploys_took:.1f} s; /health: {len(probe.samples)} probes, "
            f"slowest {slowest * 1000:.0f} ms; bystander: {len(ticks)} ticks, "
            f"latest claim {lateness * 1000:.0f} ms after its tick"
        )
        late = [(scheduled, claimed) for scheduled, claimed, _ in ticks if claimed - scheduled > timedelta(seconds=1)]
        assert late == [], late
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(ticks)]
        assert all(gap == timedelta(seconds=INTERVAL) for gap in gaps), gaps  # none skipped
        assert all(status in ("succeeded", "running") for _, _, status in ticks), ticks
    finally:
        conn.close()
        service.terminate()

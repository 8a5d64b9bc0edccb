"""The commands that drive a running service over HTTP: deploy, list, status, logs, run, start, stop, delete.

They talk to `STRATEGY_EXECUTOR_URL` (default http://localhost:8003) with the token from
`EXECUTOR_API_TOKEN`, or else the one an embedded installation keeps in its data directory. In a
terminal they print tables in colour and show a spinner while they wait; piped, they print plain
tab-separated lines; with `--json`, the service's own JSON (one object per line for `logs`).

Exit codes (stable, for scripts):
    0  done (`run --wait`: the execution succeeded)
    1  the service refused the request (validation error, conflict)
    2  bad usage (arguments, an unreadable file, --config that is not a JSON object)
    3  no such strategy or execution
    4  the service cannot be reached, or answered with a server error
    5  authentication failed (no token, or the wrong one)
    6  `run --wait`: the execution ended without succeeding (failed, timed_out, ...)
    7  `run --wait`: it did not end within --timeout
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_UNAVAILABLE = 4
EXIT_AUTH = 5
EXIT_EXECUTION_FAILED = 6
EXIT_TIMEOUT = 7

DEFAULT_URL = "http://localhost:8003"
SERVER_WAIT_LIMIT = 60.0  # the longest ?wait the API accepts per request
FOLLOW_INTERVAL = 1.0

_STYLES = {
    "running": "green",
    "succeeded": "green",
    "pending": "yellow",
    "stopped": "dim",
    "deleting": "dim",
    "failed": "red",
    "error": "red",
    "timed_out": "red",
    "memory_exceeded": "red",
    "lost": "magenta",
    "interrupted": "magenta",
}


class CliError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


Handler = Callable[["Client", argparse.Namespace, "Output"], int]


# --- arguments --------------------------------------------------------------------------------------


def register(commands: Any) -> None:
    """Add the client commands to the `strategy-executor` subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the service's JSON (for scripts)")
    common.add_argument("--url", help=f"the service (default: $STRATEGY_EXECUTOR_URL or {DEFAULT_URL})")
    epilog = "exit codes: " + "; ".join(
        f"{code} {meaning}"
        for code, meaning in (
            (0, "done"),
            (1, "refused"),
            (2, "bad usage"),
            (3, "not found"),
            (4, "service unreachable"),
            (5, "authentication failed"),
            (6, "execution did not succeed"),
            (7, "timed out waiting"),
        )
    )

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(name, parents=[common], help=help_text, epilog=epilog)
        parser.set_defaults(client_command=handler)
        return parser

    deploy = add("deploy", _deploy, "deploy a strategy from a file (or replace its code and settings)")
    deploy.add_argument("file", type=Path, help="the strategy's Python source ('-' reads standard input)")
    deploy.add_argument("--interval", type=int, required=True, help="seconds between runs")
    deploy.add_argument("--config", default="{}", help="the strategy's CONFIG as a JSON object")
    deploy.add_argument("--id", dest="strategy_id", help="the strategy id (default: generated)")
    deploy.add_argument("--user", help="the owning user id (default: your login name)")
    deploy.add_argument("--name", help="a display name (default: the id)")
    deploy.add_argument("--exchange", choices=["paper", "coindcx"], default="paper")
    deploy.add_argument(
        "--credentials-from-env",
        action="store_true",
        help="send COINDCX_API_KEY and COINDCX_API_SECRET from the environment (never on the command line)",
    )
    deploy.add_argument("--stopped", action="store_true", help="deploy without starting it")

    listing = add("list", _list, "list strategies, newest first")
    listing.add_argument("--user", help="only this user's strategies")
    listing.add_argument("--status", choices=["pending", "running", "stopped", "error", "deleting", "halted"])
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")

    add("status", _status, "a strategy's status and statistics").add_argument("strategy_id", metavar="ID")

    logs = add("logs", _logs, "a strategy's recent executions and their output")
    logs.add_argument("strategy_id", metavar="ID")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing executions as they end")
    logs.add_argument("--limit", type=int, default=10, help="how many recent executions to show first")

    run = add("run", _run, "request a run now (even of a stopped strategy)")
    run.add_argument("strategy_id", metavar="ID")
    run.add_argument("--wait", action="store_true", help="wait for the execution and print it")
    run.add_argument("--timeout", type=float, default=120.0, help="with --wait: give up after this (seconds)")

    for name, help_text in (("start", "set a strategy running"), ("stop", "stop a strategy's schedule")):
        add(name, _set_desired, help_text).add_argument("strategy_id", metavar="ID")
    add("delete", _delete, "delete a strategy once nothing of it runs").add_argument("strategy_id", metavar="ID")


def run(args: argparse.Namespace) -> int:
    """Run a client command; every failure becomes one line on stderr and an exit code."""
    output = Output(json_mode=args.json)
    handler: Handler = args.client_command
    try:
        with Client(args.url or os.environ.get("STRATEGY_EXECUTOR_URL") or DEFAULT_URL, _token()) as client:
            return handler(client, args, output)
    except CliError as exc:
        output.error(str(exc))
        return exc.code
    except KeyboardInterrupt:
        return 130


def _token() -> str | None:
    token = os.environ.get("EXECUTOR_API_TOKEN")
    if token:
        return token
    from reconciler.embedded import default_data_dir

    data_dir = Path(os.environ["DATA_DIR"]) if os.environ.get("DATA_DIR") else default_data_dir()
    try:
        return (data_dir / "api-token").read_text().strip() or None
    except OSError:
        return None


# --- HTTP ---------------------------------------------------------------------------------------------


class Client:
    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=SERVER_WAIT_LIMIT + 15)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def call(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(
                EXIT_UNAVAILABLE, f"cannot reach the service at {self.url}: {exc} (set STRATEGY_EXECUTOR_URL)"
            ) from None
        if response.status_code in ok:
            return response
        raise _refusal(response)


def _refusal(response: httpx.Response) -> CliError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    message = body.get("message") or response.reason_phrase or f"HTTP {response.status_code}"
    status = response.status_code
    if status == 401:
        hint = "set EXECUTOR_API_TOKEN, or DATA_DIR to the service's data directory"
        return CliError(EXIT_AUTH, f"authentication failed: {message} ({hint})")
    if status == 404:
        return CliError(EXIT_NOT_FOUND, f"not found: {message}")
    if status >= 500:
        return CliError(EXIT_UNAVAILABLE, f"the service answered {status}: {message}")
    details = [_field_error(item) for item in body.get("detail") or [] if isinstance(item, dict)]
    return CliError(EXIT_REFUSED, "; ".join([message, *details]) if details else message)


def _field_error(item: dict[str, Any]) -> str:
    where = item.get("field", "?")
    if item.get("line") is not None:
        where += f" line {item['line']}" + (f" column {item['column']}" if item.get("column") is not None else "")
    return f"{where}: {item.get('reason', '')}"


# --- output ----------------------------------------------------------------------------------------------


class Output:
    """Tables and colour on a terminal, tab-separated lines when piped, the raw JSON with --json."""

    def __init__(self, *, json_mode: bool) -> None:
        self.json_mode = json_mode
        self.console = Console(highlight=False, soft_wrap=True)
        self.errors = Console(stderr=True, highlight=False, soft_wrap=True)
        self.terminal = self.console.is_terminal

    def json(self, body: Any) -> None:
        sys.stdout.write(json.dumps(body) + "\n")
        sys.stdout.flush()

    def table(self, columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
        if not self.terminal:
            for row in [columns, *rows]:
                sys.stdout.write("\t".join(_plain(cell) for cell in row) + "\n")
            return
        table = Table(title=title, header_style="bold")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(_styled(cell) for cell in row))
        self.console.print(table)

    def fields(self, pairs: list[tuple[str, Any]], title: str | None = None) -> None:
        if not self.terminal:
            for key, value in pairs:
                sys.stdout.write(f"{key}\t{_plain(value)}\n")
            return
        table = Table(title=title, show_header=False, box=None)
        table.add_column(style="bold")
        table.add_column()
        for key, value in pairs:
            table.add_row(key, _styled(value))
        self.console.print(table)

    def line(self, text: str, style: str | None = None) -> None:
        if self.terminal:
            self.console.print(text, style=style, markup=False)
        else:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def error(self, text: str) -> None:
        self.errors.print(f"strategy-executor: {text}", style="red" if self.errors.is_terminal else None, markup=False)

    def waiting(self, text: str) -> Any:
        """A spinner on stderr while something waits (nothing when stderr is not a terminal)."""
        if self.errors.is_terminal:
            return self.errors.status(text)
        return _Nothing()


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, *args: object, **kwargs: object) -> None:
        return None


def _plain(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _styled(value: Any) -> str:
    from rich.markup import escape

    text = escape(_plain(value))
    style = _STYLES.get(str(value))
    return f"[{style}]{text}[/]" if style else text


# --- commands ------------------------------------------------------------------------------------------


def _deploy(client: Client, args: argparse.Namespace, out: Output) -> int:
    try:
        code = sys.stdin.read() if str(args.file) == "-" else args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(EXIT_USAGE, f"cannot read {args.file}: {exc}") from None
    try:
        config = json.loads(args.config)
    except ValueError as exc:
        raise CliError(EXIT_USAGE, f"--config is not JSON: {exc}") from None
    if not isinstance(config, dict):
        raise CliError(EXIT_USAGE, '--config must be a JSON object, e.g. \'{"pair": "B-BTC_USDT"}\'')
    body: dict[str, Any] = {
        "user_id": args.user or getpass.getuser(),
        "code": code,
        "config": config,
        "execution_interval": args.interval,
        "exchange": args.exchange,
        "auto_start": not args.stopped,
    }
    if args.strategy_id:
        body["strategy_id"] = args.strategy_id
    if args.name:
        body["name"] = args.name
    if args.credentials_from_env:
        key, secret = os.environ.get("COINDCX_API_KEY"), os.environ.get("COINDCX_API_SECRET")
        if not key or not secret:
            raise CliError(EXIT_USAGE, "--credentials-from-env needs COINDCX_API_KEY and COINDCX_API_SECRET set")
        body.update(api_key=key, api_secret=secret)
    response = client.call("POST", "/strategies/deploy", ok=(200, 201), json=body)
    strategy = response.json()
    if out.json_mode:
        out.json(strategy)
        return EXIT_OK
    verb = "deployed" if response.status_code == 201 else "redeployed"
    out.line(
        f"{verb} {strategy['strategy_id']} (generation {strategy['generation']}, "
        f"every {strategy['execution_interval']}s, {strategy['desired_state']})",
        style="green",
    )
    return EXIT_OK


def _list(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.limit < 1:
        raise CliError(EXIT_USAGE, "--limit must be at least 1")
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {k: v for k, v in (("user_id", args.user), ("status", args.status)) if v}
    cursor = None
    while len(items) < args.limit:
        page_params = {**params, "limit": min(500, args.limit - len(items))}
        if cursor:
            page_params["cursor"] = cursor
        page = client.call("GET", "/strategies", params=page_params).json()
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    if out.json_mode:
        out.json(items)
        return EXIT_OK
    out.table(
        ["id", "user", "status", "desired", "interval", "exchange", "updated"],
        [
            [
                s["strategy_id"],
                s["user_id"],
                s["status"],
                s["desired_state"],
                s["execution_interval"],
                s["exchange"],
                _time(s["updated_at"]),
            ]
            for s in items
        ],
    )
    return EXIT_OK


def _status(client: Client, args: argparse.Namespace, out: Output) -> int:
    status = client.call("GET", f"/strategies/{_quote(args.strategy_id)}/status").json()
    if out.json_mode:
        out.json(status)
        return EXIT_OK
    stats = status["stats"]
    out.fields(
        [
            ("strategy", status["strategy_id"]),
            ("user", status["user_id"]),
            ("status", status["status"]),
            ("reason", status["status_reason"]),
            ("desired", status["desired_state"]),
            ("generation", f"{status['observed_generation']} of {status['generation']} observed"),
            ("interval", f"{status['execution_interval']}s"),
            ("next run", _time(status["next_execution_at"])),
            ("exchange", status["exchange"]),
            ("executions", stats["total_executions"]),
            ("succeeded", stats["successful_executions"]),
            ("failed", stats["failed_executions"]),
            ("missed ticks", stats["missed_executions"]),
            ("average time", None if stats["avg_execution_time"] is None else f"{stats['avg_execution_time']:.3f}s"),
            ("last run", _time(stats["last_execution_at"])),
            ("last error", stats["last_error"]),
        ]
    )
    return EXIT_OK


def _logs(client: Client, args: argparse.Namespace, out: Output) -> int:
    path = f"/strategies/{_quote(args.strategy_id)}/executions"
    limit = max(1, min(args.limit, 500))
    seen: set[str] = set()
    first = True
    while True:
        page = client.call("GET", path, params={"limit": limit if first else 50}).json()["items"]
        # Newest first from the API; printed oldest first, like a log. Running ones wait for their end.
        for execution in reversed(page):
            if execution["execution_id"] in seen or execution["status"] == "running":
                continue
            seen.add(execution["execution_id"])
            _print_execution(execution, out)
        first = False
        if not args.follow:
            return EXIT_OK
        time.sleep(FOLLOW_INTERVAL)


def _print_execution(execution: dict[str, Any], out: Output) -> None:
    if out.json_mode:
        out.json(execution)
        return
    duration = "" if execution["duration"] is None else f" {execution['duration']:.3f}s"
    header = (
        f"── {_time(execution['finished_at'] or execution['claimed_at'])} {execution['status']}{duration} "
        f"{execution['trigger']} {execution['execution_id']}"
    )
    out.line(header, style=f"bold {_STYLES.get(execution['status'], '')}".strip())
    for text in (execution.get("output"), execution.get("error")):
        if text:
            out.line(text.rstrip("\n"))
    if execution.get("result") is not None:
        out.line(f"RESULT = {json.dumps(execution['result'])}", style="cyan")


def _run(client: Client, args: argparse.Namespace, out: Output) -> int:
    path = f"/strategies/{_quote(args.strategy_id)}/execute"
    if not args.wait:
        run_request = client.call("POST", path, ok=(202,)).json()
        if out.json_mode:
            out.json(run_request)
        else:
            request_id = run_request["run_request_id"]
            if run_request.get("already_pending"):
                # The API joins a run request to the one still waiting (one pending per strategy).
                out.line(
                    f"a run of {args.strategy_id} was already waiting to start: joined it "
                    f"(request {request_id}, asked {run_request.get('request_count')} times)"
                )
            else:
                out.line(f"run requested for {args.strategy_id} (request {request_id})")
        return EXIT_OK
    if args.timeout <= 0:
        raise CliError(EXIT_USAGE, "--timeout must be positive")
    deadline = time.monotonic() + args.timeout
    with out.waiting(f"waiting for a run of {args.strategy_id}…") as status:
        response = client.call("POST", path, ok=(200, 202), params={"wait": min(SERVER_WAIT_LIMIT, args.timeout)})
        execution = (
            response.json() if response.status_code == 200 else _await(client, response.json(), deadline, status)
        )
    if execution is None:
        raise CliError(EXIT_TIMEOUT, f"the run of {args.strategy_id} did not end within {args.timeout:.0f}s")
    if out.json_mode:
        out.json(execution)
    else:
        _print_execution(execution, out)
    return EXIT_OK if execution["status"] == "succeeded" else EXIT_EXECUTION_FAILED


def _await(client: Client, run_request: dict[str, Any], deadline: float, status: Any) -> dict[str, Any] | None:
    """Poll until the run request's execution ends: by its id once claimed, else among the manual runs."""
    strategy_id = run_request["strategy_id"]
    execution_id = run_request.get("execution_id")
    while time.monotonic() < deadline:
        if execution_id is None:
            status.update(f"waiting for a replica to claim the run of {strategy_id}…")
            page = client.call("GET", f"/strategies/{_quote(strategy_id)}/executions", params={"limit": 20}).json()
            execution_id = _caused_by(page["items"], run_request["requested_at"])
        if execution_id is not None:
            status.update(f"execution {execution_id} running…")
            execution = client.call("GET", f"/executions/{execution_id}").json()
            if execution["status"] != "running":
                return dict(execution)
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    return None


def _caused_by(items: list[dict[str, Any]], requested_at: str) -> str | None:
    """The execution a run request caused: the first manual one claimed after the request was made."""
    since = datetime.fromisoformat(requested_at)
    for execution in reversed(items):  # oldest first
        if execution["trigger"] == "manual" and datetime.fromisoformat(execution["claimed_at"]) >= since:
            return str(execution["execution_id"])
    return None


def _set_desired(client: Client, args: argparse.Namespace, out: Output) -> int:
    action = "start" if args.command == "start" else "stop"
    status = client.call("POST", f"/strategies/{_quote(args.strategy_id)}/{action}").json()
    if out.json_mode:
        out.json(status)
    else:
        out.line(
            f"{status['strategy_id']}: desired state {status['desired_state']} (generation {status['generation']})"
        )
    return EXIT_OK


def _delete(client: Client, args: argparse.Namespace, out: Output) -> int:
    status = client.call("DELETE", f"/strategies/{_quote(args.strategy_id)}", ok=(202,)).json()
    if out.json_mode:
        out.json(status)
    else:
        out.line(f"{status['strategy_id']}: deletion requested; its rows go once nothing of it runs")
    return EXIT_OK


def _quote(strategy_id: str) -> str:
    from urllib.parse import quote

    return quote(strategy_id, safe="")


def _time(value: str | None) -> str | None:
    """An API timestamp, shortened to the second for tables (UTC, as the service reports it)."""
    if value is None:
        return None
    return value.replace("T", " ")[:19]

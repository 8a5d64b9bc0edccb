"""The README's settings table and the settings the code reads are the same list, both ways."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from reconciler.cli import _SERVICE_COMMANDS, main
from reconciler.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# Modules that read the environment themselves (not through Settings). The CLI's HTTP client reads its
# own variables (the URL of a running service, credentials to send), documented with those commands.
_ENV_READ = re.compile(
    r"""os\.environ(?:\.get\(|\[)\s*["']([A-Z][A-Z0-9_]+)["']|["']([A-Z][A-Z0-9_]+)["']\s+(?:not\s+)?in\s+os\.environ"""
)
_CLIENT_SIDE = {"reconciler/cli_client.py"}


def table_variables() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    names: set[str] = set()
    for row in rows:
        first_cell = row.split("|")[1]
        names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
    return names


def environment_reads() -> dict[str, str]:
    """Variables read straight from os.environ by the service's code, with the file that reads each."""
    found: dict[str, str] = {}
    for path in [*ROOT.glob("reconciler/**/*.py"), *ROOT.glob("api/**/*.py")]:
        relative = str(path.relative_to(ROOT))
        if relative in _CLIENT_SIDE:
            continue
        for match in _ENV_READ.finditer(path.read_text()):
            found[match.group(1) or match.group(2)] = relative
    return found


def test_every_setting_is_in_the_readme_table_and_nothing_else_is() -> None:
    settings = {name.upper() for name in Settings.model_fields}
    direct = environment_reads()
    table = table_variables()
    assert settings - table == set(), "settings missing from the README's Settings table"
    assert set(direct) - table == set(), f"variables read from os.environ but not in the table: {direct}"
    assert table - settings - set(direct) == set(), "the table lists variables the code does not read"


def test_the_table_reader_sees_every_row() -> None:
    # A guard against a parser that silently reads nothing: the table is long and has shared rows.
    table = table_variables()
    assert {"PORT", "HOST", "MAX_OUTPUT_BYTES", "MAX_STATE_BYTES", "COINDCX_PUBLIC_URL"} <= table


def test_every_service_command_help_says_what_it_does_and_what_it_reads(capsys) -> None:  # type: ignore[no-untyped-def]
    for command in _SERVICE_COMMANDS:
        try:
            main([command, "--help"])
        except SystemExit as exit:
            assert exit.code == 0
        text = capsys.readouterr().out
        assert "Settings it reads" in text and "Settings table of the project's README.md" in text, command
        summary = _SERVICE_COMMANDS[command][0]
        assert summary in " ".join(text.split()), command
    with contextlib.suppress(SystemExit):
        main(["worker", "--help"])
    assert "DATABASE_URL       required" in capsys.readouterr().out

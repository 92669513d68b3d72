"""The README stays true to the code: its config reference lists every key, its commands exist."""

from __future__ import annotations

from pathlib import Path

from orchestrator.config import describe_fields

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_readme_config_reference_lists_every_key_with_its_default():
    for key, default, _ in describe_fields():
        assert f"| `{key}` | `{default}` |" in README, f"README's config reference lacks {key} (default {default})"


def test_readme_names_the_two_commands_and_ci_runs_the_test_one():
    assert "make run" in README and "make test" in README
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_readme_commands_are_real_cli_commands():
    from typer.main import get_command

    from orchestrator.cli import app

    cli = get_command(app)
    for name in ("run", "validate", "show-config", "bench", "data"):
        assert name in cli.commands
        assert f"committee {name}" in README

"""docs/forecast.md documents every option with the text of its config docstring (one source)."""

from pathlib import Path

from alignlab.configs import field_docs
from alignlab.forecast.command import ForecastConfig

DOCS = Path(__file__).resolve().parents[2] / "docs" / "forecast.md"


def test_every_option_is_in_the_docs_with_its_help_text():
    text = DOCS.read_text(encoding="utf-8")
    for name, doc in field_docs(ForecastConfig).items():
        row = f"| `--{name.replace('_', '-')}` |"
        assert row in text, f"docs/forecast.md has no row for --{name}"
        line = next(line for line in text.splitlines() if line.startswith(row))
        assert line.rstrip(" |").endswith(doc), f"--{name}: docs text differs from the config docstring"

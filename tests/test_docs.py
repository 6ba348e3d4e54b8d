import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_cli_reference_is_generated_from_the_current_configs():
    spec = importlib.util.spec_from_file_location("make_cli_docs", ROOT / "scripts" / "make_cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "docs" / "cli-reference.md").read_text() == module.render(), (
        "docs/cli-reference.md is stale: run .venv/bin/python scripts/make_cli_docs.py")


def test_readme_opens_with_the_two_commands():
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:12])
    assert "make demo" in head and "make test" in head

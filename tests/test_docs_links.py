"""Every relative link and image in README.md and docs/ points at something that exists.

Standard library only, and no alignlab import: the checking is the plain function
``broken_links(root)``, which returns one "file:line: target (why)" string per broken link, so it
runs without pytest as well. Checked: inline links ``[text](target)``, images ``![alt](target)``
and reference definitions ``[label]: target``, outside fenced code blocks and inline code.
Skipped: http:, https: and mailto: URLs, and pure anchors (``#section``). A relative target must
exist relative to the Markdown file and stay inside the repository (never ``../shared``, which a
user's clone does not have); an anchor on a .md target must match one of that file's headings
by GitHub's slug rules.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent

SKIPPED_SCHEMES = ("http:", "https:", "mailto:")

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)", re.S)
# [text](target "title"): the text may hold one level of brackets (an image inside a link); the
# target may hold balanced parentheses or be written <like this>.
_INLINE = re.compile(
    r"(!?)\[((?:[^\[\]\\]|\\.|\[(?:[^\[\]\\]|\\.)*\])*)\]"
    r"\(\s*(<[^<>\n]*>|(?:[^\s()\\]|\\.|\((?:[^\s()\\]|\\.)*\))*)"
    r"(?:\s+(?:\"[^\"\n]*\"|'[^'\n]*'|\([^()\n]*\)))?\s*\)"
)
_DEFINITION = re.compile(r"^ {0,3}\[([^\]\n]+)\]:\s*(<[^<>\n]*>|\S+)")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_HTML_ANCHOR = re.compile(r"""<a\s[^>]*?\b(?:name|id)\s*=\s*["']([^"']+)["']""", re.I)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def markdown_files(root: Path = ROOT) -> list[Path]:
    """README.md and every .md file under docs/, sorted."""
    files = [root / "README.md"] if (root / "README.md").is_file() else []
    docs = root / "docs"
    if docs.is_dir():
        files += sorted(p for p in docs.rglob("*.md") if p.is_file())
    return files


def _blank_code_spans(line: str) -> str:
    """The line with the content of inline code replaced by spaces (columns stay where they were)."""
    return _CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, line) for every line outside fenced code blocks, inline code blanked."""
    out: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if fence is None:
            if m:
                fence = m.group(1)
                continue
            out.append((number, _blank_code_spans(line)))
        elif m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line[m.end():].strip():
            fence = None
    return out


def links(text: str) -> list[tuple[int, str]]:
    """(line, target) of every inline link, image and reference definition outside code."""
    found: list[tuple[int, str]] = []

    def scan(line: str, number: int) -> None:
        for m in _INLINE.finditer(line):
            found.append((number, m.group(3)))
            scan(m.group(2), number)  # an image inside a link's text: [![alt](img)](target)

    for number, line in prose_lines(text):
        d = _DEFINITION.match(line)
        if d:
            found.append((number, d.group(2)))
            continue
        scan(line, number)
    return [(n, t[1:-1] if t.startswith("<") and t.endswith(">") else t) for n, t in found]


def _heading_text(raw: str) -> str:
    """A heading's text as GitHub renders it: code kept verbatim, links and images reduced to their
    text, emphasis markers and HTML tags dropped."""
    parts = []
    last = 0
    for m in _CODE_SPAN.finditer(raw):
        parts.append(("text", raw[last:m.start()]))
        parts.append(("code", m.group(2).strip() if m.group(2).strip() else m.group(2)))
        last = m.end()
    parts.append(("text", raw[last:]))
    out = []
    for kind, piece in parts:
        if kind == "text":
            piece = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", piece)
            piece = re.sub(r"<[^>]+>", "", piece)
            piece = re.sub(r"(?<![\w\\])_+|_+(?![\w])", "", piece)  # _emphasis_, not snake_case
            piece = piece.replace("\\", "")
        out.append(piece)
    return "".join(out).strip()


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: lowercase; drop every character that is not a letter,
    a digit, a space, a hyphen or an underscore; each space becomes a hyphen."""
    text = _heading_text(heading).lower()
    kept = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a Markdown file offers: its headings' slugs (a repeated slug gets -1, -2, ...
    as on GitHub) and the names of explicit HTML anchors."""
    seen: dict[str, int] = {}
    result: set[str] = set()
    lines = prose_lines(text)
    raw = text.splitlines()
    for i, (number, line) in enumerate(lines):
        m = _ATX.match(raw[number - 1])
        heading = None
        if m and _ATX.match(line):
            heading = m.group(2) or ""
        elif (_SETEXT.match(line) and i > 0 and lines[i - 1][0] == number - 1 and raw[number - 2].strip()
              and not _ATX.match(raw[number - 2]) and not raw[number - 2].lstrip().startswith(("-", "*", "|", ">"))):
            heading = raw[number - 2].strip()
        if heading is not None:
            base = slug(heading)
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
        for a in _HTML_ANCHOR.finditer(line):
            result.add(a.group(1))
    return result


def check_target(md: Path, target: str, root: Path) -> str | None:
    """Why ``target``, linked from ``md``, is broken; None when it is fine or not checked here."""
    target = target.strip()
    if not target:
        return "empty target"
    if "../shared" in target.replace("\\", "/"):
        return "points into ../shared, which a clone of this repository does not have"
    if target.lower().startswith(SKIPPED_SCHEMES) or target.startswith("#"):
        return None
    if target.startswith("//") or _SCHEME.match(target):
        return "an absolute URL that is not http(s) or mailto"
    path_part, _, anchor = target.partition("#")
    path_part = unquote(path_part.split("?", 1)[0])
    if path_part.startswith("/"):
        return "an absolute path; link relative to the Markdown file"
    resolved = Path(os.path.normpath(md.parent / path_part))
    root = Path(os.path.normpath(root))
    if resolved != root and root not in resolved.parents:
        return "points outside the repository"
    if not resolved.exists():
        return "no such file or folder"
    if anchor and resolved.is_file() and resolved.suffix.lower() == ".md":
        if unquote(anchor).lower() not in {a.lower() for a in anchors(resolved.read_text(encoding="utf-8"))}:
            return f"no heading with anchor #{anchor} in {resolved.relative_to(root).as_posix()}"
    return None


def broken_links(root: Path = ROOT) -> tuple[list[str], int, int]:
    """(broken links as "file:line: target (why)", Markdown files read, links checked)."""
    broken: list[str] = []
    files = markdown_files(root)
    checked = 0
    for md in files:
        for number, target in links(md.read_text(encoding="utf-8")):
            checked += 1
            why = check_target(md, target, root)
            if why:
                broken.append(f"{md.relative_to(root).as_posix()}:{number}: {target} ({why})")
    return broken, len(files), checked


# -- the tests ---------------------------------------------------------------------------------------


def test_every_relative_link_in_readme_and_docs_resolves():
    broken, files, checked = broken_links(ROOT)
    assert files > 1, f"no Markdown files found under {ROOT} (README.md, docs/**/*.md): nothing was checked"
    assert checked > 0, "the Markdown files hold no links at all: the checker found nothing to check"
    assert not broken, f"{len(broken)} broken link(s):\n" + "\n".join(broken)


def _repo(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_the_checker_reports_what_is_broken_and_passes_what_is_not(tmp_path):
    root = _repo(tmp_path / "repo", {
        "README.md": "[docs](docs/) and [a](docs/a.md#the-ledger-pressurejson) ![img](docs/x.png)\n"
                     "[web](https://example.org/x) [mail](mailto:a@b.c) [top](#anything)\n",
        "docs/x.png": "",
        "docs/a.md": (
            "# The ledger (`pressure.json`)\n\n## Twice\n\n## Twice\n\nSetext heading\n---\n\n"
            "[ok](../README.md) [dup](#ignored) [b](a.md#twice-1) [s](a.md#setext-heading)\n"
            "[missing](b.md) [stale](a.md#nope) [shared](../../shared/x.md)\n"
            "[out](../../elsewhere.md) [abs](/docs/a.md) [ftp](ftp://x/y)\n"
            "[![badge](missing.png)](a.md)\n"
            "`[code](nowhere.md)` and\n\n```\n[fenced](nowhere.md)\n```\n\n[ref]: gone.md\n"
        ),
    })
    (tmp_path / "elsewhere.md").write_text("outside\n")
    broken, files, checked = broken_links(root)
    assert files == 2 and checked == 19
    assert broken == [
        "docs/a.md:11: b.md (no such file or folder)",
        "docs/a.md:11: a.md#nope (no heading with anchor #nope in docs/a.md)",
        "docs/a.md:11: ../../shared/x.md (points into ../shared, which a clone of this repository does not have)",
        "docs/a.md:12: ../../elsewhere.md (points outside the repository)",
        "docs/a.md:12: /docs/a.md (an absolute path; link relative to the Markdown file)",
        "docs/a.md:12: ftp://x/y (an absolute URL that is not http(s) or mailto)",
        "docs/a.md:13: missing.png (no such file or folder)",
        "docs/a.md:20: gone.md (no such file or folder)",
    ]


def test_github_slugs():
    assert slug("Fitting a head (`--layer`, `--head-l2`)") == "fitting-a-head---layer---head-l2"
    assert slug("Statistics a reader can trust (`pressure/stats.py`)") == \
        "statistics-a-reader-can-trust-pressurestatspy"
    assert slug("The **main** job: `alignlab experiment`") == "the-main-job-alignlab-experiment"
    assert slug("RLOO and GRPO (`rloo.py`, `grpo.py`; the shared loop `online.py`)") == \
        "rloo-and-grpo-rloopy-grpopy-the-shared-loop-onlinepy"
    assert slug("`snake_case` and _emphasis_") == "snake_case-and-emphasis"
    assert slug("Ours beside [the paper](https://x.org) — 95%") == "ours-beside-the-paper--95"


def test_no_markdown_files_is_not_a_pass(tmp_path):
    broken, files, checked = broken_links(tmp_path)
    assert (broken, files, checked) == ([], 0, 0)  # the repository test above refuses files == 0

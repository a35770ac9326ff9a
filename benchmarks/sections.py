"""One section of benchmarks/RESULTS.md, between its `<!-- name:begin -->` and `<!-- name:end -->`
markers, rewritten in place (appended when the markers are not there yet); the rest is kept."""

from __future__ import annotations

from pathlib import Path


def write_section(target: Path, name: str, markdown: str) -> None:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    section = f"{begin}\n{markdown.rstrip()}\n{end}\n"
    text = target.read_text() if target.is_file() else "# Benchmark results\n\n"
    if begin in text and end in text:
        before, rest = text.split(begin, 1)
        text = before + section + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    target.write_text(text)

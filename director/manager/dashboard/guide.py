"""
The user guide: Markdown files in docs/guide/ rendered for the dashboard, with a small
search. Pages are rendered once and kept until their file changes (checked by mtime), so
a docs edit shows up without a restart and an unchanged page costs a stat().

Raw HTML in the Markdown is escaped, not passed through: the guide is ours, but a page
that could carry script would be one mistake away from an XSS in the dashboard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
ORDER_FILE = "ORDER"


@dataclass(frozen=True)
class GuidePage:
    """One rendered page: its URL name, its title (the first heading) and HTML."""

    name: str
    title: str
    html: str
    text: str
    headings: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class SearchHit:
    name: str
    title: str
    snippet: str
    score: int


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "section"


def _renderer() -> Any:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "typographer": True}).enable("table")
    return md


class Guide:
    """The pages under C{directory}, in the order its ORDER file gives (then by name)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._md = _renderer()
        self._cache: dict[str, tuple[float, GuidePage]] = {}

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        found = sorted(
            p.stem for p in self.directory.glob("*.md") if PAGE_NAME.match(p.stem) is not None
        )
        order_file = self.directory / ORDER_FILE
        order: list[str] = []
        if order_file.is_file():
            order = [line.strip() for line in order_file.read_text().splitlines() if line.strip()]
        ranked = [n for n in order if n in found]
        return ranked + [n for n in found if n not in ranked]

    def page(self, name: str) -> GuidePage | None:
        """The rendered page C{name}, or None (bad or unknown names alike)."""
        if not PAGE_NAME.match(name):
            return None
        path = self.directory / f"{name}.md"
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        cached = self._cache.get(name)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        page = self._render(name, path.read_text(encoding="utf-8"))
        self._cache[name] = (mtime, page)
        return page

    def contents(self) -> list[tuple[str, str]]:
        """(name, title) of every page, for the table of contents."""
        out = []
        for name in self.names():
            page = self.page(name)
            if page is not None:
                out.append((name, page.title))
        return out

    def _render(self, name: str, source: str) -> GuidePage:
        tokens = self._md.parse(source)
        title = name.replace("-", " ").capitalize()
        headings: list[tuple[str, str]] = []
        used: set[str] = set()
        for i, token in enumerate(tokens):
            if token.type == "heading_open":
                text = tokens[i + 1].content if i + 1 < len(tokens) else ""
                if (
                    token.tag == "h1"
                    and not headings
                    and title == name.replace("-", " ").capitalize()
                ):
                    title = text
                anchor = _slug(text)
                while anchor in used:
                    anchor += "-1"
                used.add(anchor)
                token.attrSet("id", anchor)
                if token.tag in ("h2", "h3"):
                    headings.append((anchor, text))
            if token.type == "inline" and token.children:
                for child in token.children:
                    if child.type == "link_open":
                        href = str(child.attrGet("href") or "")
                        child.attrSet("href", self._rewrite_link(href))
        html = self._md.renderer.render(tokens, self._md.options, {})
        plain = re.sub(r"[#>*_`|\[\]()-]+", " ", source)
        return GuidePage(name, title, html, " ".join(plain.split()), tuple(headings))

    @staticmethod
    def _rewrite_link(href: str) -> str:
        """Links between guide files (`editor.md#save`) become dashboard URLs."""
        match = re.fullmatch(r"(?:\./)?([a-z0-9][a-z0-9-]*)\.md(#[A-Za-z0-9_-]*)?", href)
        if match:
            return f"/docs/{match.group(1)}" + (match.group(2) or "")
        return href

    def search(self, query: str, limit: int = 20) -> list[SearchHit]:
        """Pages containing every word of C{query}; title matches count double."""
        words = [w.lower() for w in re.findall(r"\w+", query)[:10] if len(w) >= 2]
        if not words:
            return []
        hits = []
        for name in self.names():
            page = self.page(name)
            if page is None:
                continue
            text = page.text.lower()
            title = page.title.lower()
            if not all(w in text or w in title for w in words):
                continue
            score = sum(2 * title.count(w) + text.count(w) for w in words)
            hits.append(SearchHit(name, page.title, _snippet(page.text, words[0]), score))
        hits.sort(key=lambda h: (-h.score, h.name))
        return hits[:limit]


def _snippet(text: str, word: str, width: int = 160) -> str:
    at = text.lower().find(word)
    if at < 0:
        return text[:width]
    start = max(0, at - width // 3)
    snippet = text[start : start + width]
    return ("…" if start else "") + snippet + ("…" if start + width < len(text) else "")

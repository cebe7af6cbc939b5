"""
The site menu shown by `ssh user@host`: what it prints, how it reads a choice, and what
counts as one. Pure logic over bytes and strings, so every keystroke case is a plain test.

Before the user reaches their site's shell, nothing they type is interpreted by a real
terminal: this module is the whole line editor, so it keeps to what a menu needs (printable
characters, backspace, Ctrl-U, Enter, Ctrl-C, Ctrl-D) and drops the rest, escape sequences
included, rather than echoing it back.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence
from dataclasses import dataclass

from director.shell.accounts import SiteSummary

#: The longest choice accepted (a site name is at most 32 characters).
MAX_INPUT = 64
#: Wrong choices before the connection is closed.
MAX_TRIES = 3

_PLAUSIBLE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


@dataclass(frozen=True)
class Line:
    """The user pressed Enter; C{overlong} when they typed more than L{MAX_INPUT}."""

    text: str
    overlong: bool = False


@dataclass(frozen=True)
class Interrupt:
    """Ctrl-C."""


@dataclass(frozen=True)
class EndOfInput:
    """Ctrl-D on an empty line, or the client closed its input."""


MenuEvent = Line | Interrupt | EndOfInput


class LineReader:
    """
    Reads one line at a time from raw SSH channel bytes. With C{echo} (the client has a
    terminal) typed characters are echoed and lines end with CR; without it, lines end with
    LF and nothing is echoed.
    """

    def __init__(self, echo: bool, max_length: int = MAX_INPUT) -> None:
        self._echo = echo
        self._max = max_length
        self._chars: list[str] = []
        self._overlong = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._escape = ""  # "" / "esc" / "csi": where we are in an escape sequence

    def feed(self, data: bytes) -> tuple[bytes, MenuEvent | None, bytes]:
        """
        Consume C{data} up to the end of the first line (or Ctrl-C / Ctrl-D). Return what
        to echo, the event if one happened, and the bytes after it, not yet consumed.
        """
        echo = bytearray()
        for i in range(len(data)):
            event = self._byte(data[i], echo)
            if event is not None:
                return bytes(echo), event, data[i + 1 :]
        return bytes(echo), None, b""

    def _byte(self, byte: int, echo: bytearray) -> MenuEvent | None:
        if self._escape:
            if self._escape == "esc":
                self._escape = "csi" if byte in (0x5B, 0x4F) else ""  # ESC [ or ESC O
            elif 0x40 <= byte <= 0x7E:
                self._escape = ""
            return None
        if byte == 0x1B:
            self._escape = "esc"
            return None
        if byte == 0x03:
            return Interrupt()
        if byte == 0x04:
            return EndOfInput() if not self._chars and not self._overlong else None
        if byte in (0x0D, 0x0A):
            if self._echo and byte == 0x0A:
                return None  # the CR already ended the line
            if not self._echo and byte == 0x0D:
                return None
            if self._echo:
                echo += b"\r\n"
            line = Line("".join(self._chars), self._overlong)
            self._chars, self._overlong = [], False
            return line
        if byte in (0x7F, 0x08):
            if self._chars:
                self._chars.pop()
                if self._echo:
                    echo += b"\b \b"
            return None
        if byte == 0x15:  # Ctrl-U
            if self._echo:
                echo += b"\b \b" * len(self._chars)
            self._chars, self._overlong = [], False
            return None
        char = self._decoder.decode(bytes([byte]))
        if not char or not char.isprintable():
            return None
        if len(self._chars) >= self._max:
            self._overlong = True
            return None
        self._chars.append(char)
        if self._echo:
            echo += char.encode("utf-8")
        return None


@dataclass(frozen=True)
class Chosen:
    site: SiteSummary


@dataclass(frozen=True)
class Retry:
    """Not a valid choice: show C{message} (one line) and ask again."""

    message: str


@dataclass(frozen=True)
class GiveUp:
    """Too many wrong choices: show C{message} and close."""

    message: str


class SiteMenu:
    """The user's sites as a numbered list, and the rules for picking one."""

    def __init__(self, sites: Sequence[SiteSummary], max_tries: int = MAX_TRIES) -> None:
        self.sites = tuple(sites)
        self._tries_left = max_tries

    def text(self, newline: str) -> str:
        """The list of sites, one per line, each line ending with C{newline}."""
        width = len(str(len(self.sites)))
        lines = ["Your sites:"]
        for number, site in enumerate(self.sites, 1):
            notes = [site.type]
            if site.availability != "enabled":
                notes.append(site.availability)
            lines.append(f"  {number:>{width}}) {site.name} ({', '.join(notes)})")
        return newline.join(lines) + newline

    PROMPT = "Choose a site (number or name, Ctrl-C to leave): "

    def choose(self, line: Line) -> Chosen | Retry | GiveUp | None:
        """What typing C{line} means; C{None} for an empty line (just ask again)."""
        text = line.text.strip()
        if not text and not line.overlong:
            return None
        site = None if line.overlong else self._lookup(text)
        if site is not None and not site.closed:
            return Chosen(site)
        if line.overlong:
            message = f"That is too long: type a number from 1 to {len(self.sites)} or a site name."
        elif site is not None:
            message = f"The site {site.name} is disabled."
        elif text.isdigit():
            message = f"There is no site number {text[:8]}: type 1 to {len(self.sites)}."
        elif _PLAUSIBLE.fullmatch(text.lower()):
            message = f"You have no site called {text.lower()}."
        else:
            message = "Type the number or the name of one of your sites."
        self._tries_left -= 1
        if self._tries_left <= 0:
            return GiveUp(message + " Too many tries; goodbye.")
        return Retry(message)

    def _lookup(self, text: str) -> SiteSummary | None:
        if text.isdigit() and text.isascii():
            number = int(text)
            return self.sites[number - 1] if 1 <= number <= len(self.sites) else None
        name = text.lower()
        for site in self.sites:
            if site.name == name:
                return site
        return None

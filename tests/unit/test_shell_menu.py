"""The site menu's line editor and choice rules, keystroke by keystroke."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from director.shell.accounts import SiteSummary
from director.shell.menu import (
    MAX_INPUT,
    Chosen,
    EndOfInput,
    GiveUp,
    Interrupt,
    Line,
    LineReader,
    Retry,
    SiteMenu,
)

SITES = (
    SiteSummary(1, "alpha", "static", "enabled"),
    SiteSummary(2, "beta", "dynamic", "not-served"),
    SiteSummary(3, "off", "static", "disabled"),
)


class LineReaderTests(SynchronousTestCase):
    def test_terminal_echo_and_enter(self) -> None:
        """With a terminal, typed characters are echoed and CR ends the line."""
        reader = LineReader(echo=True)
        self.assertEqual(reader.feed(b"al"), (b"al", None, b""))
        self.assertEqual(reader.feed(b"pha\rrest"), (b"pha\r\n", Line("alpha"), b"rest"))

    def test_backspace_and_ctrl_u(self) -> None:
        """Backspace rubs out one character, Ctrl-U the whole line; neither past the start."""
        reader = LineReader(echo=True)
        echo, event, _ = reader.feed(b"ab\x7f\x7f\x7fc\x15xy\x08z\r")
        self.assertEqual(event, Line("xz"))
        self.assertEqual(echo, b"ab\b \b\b \bc\b \bxy\b \bz\r\n")

    def test_escape_sequences_and_controls_are_dropped(self) -> None:
        """Arrow keys, function keys and other control bytes neither echo nor count."""
        reader = LineReader(echo=True)
        echo, event, _ = reader.feed(b"\x1b[A\x1bOP\x1b[15~1\x00\x07\t2\r")
        self.assertEqual((echo, event), (b"12\r\n", Line("12")))

    def test_utf8_split_across_packets(self) -> None:
        """A character split over two reads is echoed once it is whole."""
        reader = LineReader(echo=True)
        self.assertEqual(reader.feed("é".encode()[:1])[0], b"")
        self.assertEqual(reader.feed("é".encode()[1:] + b"\r"), ("é\r\n".encode(), Line("é"), b""))

    def test_overlong_input_is_cut_and_flagged(self) -> None:
        """Past the limit nothing more is kept or echoed, and the line says it was too long."""
        reader = LineReader(echo=True)
        echo, event, _ = reader.feed(b"x" * (MAX_INPUT + 1000) + b"\r")
        self.assertEqual(event, Line("x" * MAX_INPUT, overlong=True))
        self.assertEqual(echo, b"x" * MAX_INPUT + b"\r\n")
        self.assertEqual(reader.feed(b"ok\r")[1], Line("ok"))

    def test_ctrl_c_and_ctrl_d(self) -> None:
        """Ctrl-C interrupts at any time; Ctrl-D ends input only on an empty line."""
        self.assertEqual(LineReader(echo=True).feed(b"ab\x03zz"), (b"ab", Interrupt(), b"zz"))
        reader = LineReader(echo=True)
        self.assertEqual(reader.feed(b"a\x04")[1], None)
        self.assertEqual(reader.feed(b"\x15\x04")[1], EndOfInput())

    def test_without_a_terminal(self) -> None:
        """Without a terminal nothing is echoed, LF ends a line and CR is ignored."""
        reader = LineReader(echo=False)
        self.assertEqual(reader.feed(b"beta\r\nls\n"), (b"", Line("beta"), b"ls\n"))


class SiteMenuTests(SynchronousTestCase):
    def test_text(self) -> None:
        """Sites are numbered, with their type and any availability other than enabled."""
        self.assertEqual(
            SiteMenu(SITES).text("\r\n"),
            "Your sites:\r\n  1) alpha (static)\r\n  2) beta (dynamic, not-served)\r\n"
            "  3) off (static, disabled)\r\n",
        )

    def test_choose_by_number_or_name(self) -> None:
        """A number or a name (any case, spaces around) picks a site; an empty line re-asks."""
        menu = SiteMenu(SITES)
        self.assertEqual(menu.choose(Line("2")), Chosen(SITES[1]))
        self.assertEqual(menu.choose(Line("  Alpha ")), Chosen(SITES[0]))
        self.assertIsNone(menu.choose(Line("   ")))

    def test_one_line_messages(self) -> None:
        """Each kind of wrong answer gets its own one-line message."""
        cases = {
            Line("9"): "There is no site number 9: type 1 to 3.",
            Line("0"): "There is no site number 0: type 1 to 3.",
            Line("gamma"): "You have no site called gamma.",
            Line("off"): "The site off is disabled.",
            Line("'; rm -rf /"): "Type the number or the name of one of your sites.",
            Line("x" * MAX_INPUT, overlong=True): "That is too long: type a number from 1 to 3 "
            "or a site name.",
        }
        for line, message in cases.items():
            self.assertEqual(SiteMenu(SITES, max_tries=5).choose(line), Retry(message))

    def test_a_disabled_site_open_to_this_user_can_be_chosen(self) -> None:
        """The manager decides: a disabled site it does not lock (an admin's) is chosen."""
        unlocked = SiteSummary(3, "off", "static", "disabled", False)
        menu = SiteMenu((SITES[0], unlocked))
        self.assertEqual(menu.choose(Line("off")), Chosen(unlocked))
        locked = SiteSummary(3, "off", "static", "disabled", True)
        self.assertEqual(
            SiteMenu((SITES[0], locked)).choose(Line("off")), Retry("The site off is disabled.")
        )

    def test_gives_up_after_three_wrong_answers(self) -> None:
        """The third wrong answer ends the menu."""
        menu = SiteMenu(SITES)
        self.assertIsInstance(menu.choose(Line("x")), Retry)
        self.assertIsNone(menu.choose(Line("")))
        self.assertIsInstance(menu.choose(Line("y")), Retry)
        outcome = menu.choose(Line("z"))
        self.assertEqual(outcome, GiveUp("You have no site called z. Too many tries; goodbye."))

    def test_unicode_digits_are_not_numbers(self) -> None:
        """Digits from other scripts do not index the list (nor crash it)."""
        self.assertIsInstance(SiteMenu(SITES).choose(Line("²")), Retry)
        self.assertIsInstance(SiteMenu(SITES).choose(Line("\u0661")), Retry)

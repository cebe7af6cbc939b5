"""
A shell session from the menu to the exit status, driven like Conch drives it, against the
fake manager and fake bridge sockets (the real SiteBridge runs over them), on a fake clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessTerminated
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from director.shell.avatar import ShellUser
from director.shell.bridge import HEARTBEAT_INTERVAL, START_TIMEOUT
from director.shell.login import ShellLogin
from director.shell.session import (
    LOGIN_SHELL,
    SessionContext,
    ShellSession,
)
from director.testing.fake_shell_manager import FakeBridges, in_memory_manager

IDLE = 600.0


def observe_logs(test: SynchronousTestCase) -> EventLoggingObserver:
    """Every log event emitted during C{test}."""
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    test.addCleanup(globalLogPublisher.removeObserver, observer)
    return observer


class RecordingProcess:
    """What Conch's SSHSessionProcessProtocol offers a session: output, stderr, the end."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.out = b""
        self.err = b""
        self.ended: list[Failure | None] = []

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure | None = None) -> None:
        self.ended.append(reason)

    @property
    def exit_status(self) -> int | None:
        assert len(self.ended) == 1, self.ended
        reason = self.ended[0]
        if reason is None:
            return None
        assert isinstance(reason.value, ProcessTerminated)
        return reason.value.exitCode

    def getPeer(self) -> Any:
        return None

    def getHost(self) -> Any:
        return None


class SessionHarness(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.fake, self.accounts = in_memory_manager(self.clock)
        self.fake.add_site(1, "blog")
        self.fake.add_site(2, "shop", type="dynamic")
        self.fake.add_site(3, "old", availability="disabled")
        self.fake.add_user("alice", "pw", sites=("blog", "shop", "old"))
        self.fake.add_user("newbie", "pw")
        self.bridges = FakeBridges(self.clock)
        self.context = SessionContext(self.clock, self.accounts, self.bridges, IDLE)
        self.events = observe_logs(self)

    def session(
        self, user: str = "alice", site: str | None = None, pty: tuple[int, int] | None = (24, 80)
    ) -> tuple[ShellSession, RecordingProcess]:
        account = self.successResultOf(
            Deferred.fromCoroutine(self.accounts.check_password(user, "pw"))
        )
        avatar = ShellUser(ShellLogin(account, site, "password"), "192.0.2.7", self.context)
        self.addCleanup(avatar.logout)
        session = ShellSession(avatar)
        if pty is not None:
            session.getPty(b"xterm", (pty[0], pty[1], 0, 0), [])
        return session, RecordingProcess()

    def shell(self, **kwargs: Any) -> tuple[ShellSession, RecordingProcess]:
        session, process = self.session(**kwargs)
        session.openShell(process)
        self.clock.advance(0)
        return session, process

    def session_logs(self) -> list[str]:
        return [formatEvent(e) for e in self.events if e.get("shell_event") == "session"]


class SessionTests(SessionHarness):
    def test_menu_to_shell_to_exit_status(self) -> None:
        """
        `ssh alice@host`: the menu lists her sites; choosing one opens the bridge with a
        token and her terminal size; output, input and resizes flow; the exit status ends it.
        """
        session, process = self.shell()
        self.assertEqual(
            process.out.decode(),
            "Your sites:\r\n  1) blog (static)\r\n  2) old (static, disabled)\r\n"
            "  3) shop (dynamic)\r\nChoose a site (number or name, Ctrl-C to leave): ",
        )
        session.write(b"3\r")
        opened = self.bridges.opened[0]
        self.assertEqual(
            (opened.grant.site_name, opened.command, opened.rows, opened.cols),
            ("shop", None, 24, 80),
        )
        hello = opened.socket.controls()[0]
        self.assertEqual(
            hello, {"token": opened.grant.token, "command": None, "rows": 24, "cols": 80}
        )
        self.assertEqual(self.fake.calls[-1], ("session", {"username": "alice", "site": "shop"}))
        socket = opened.socket
        socket.connected()
        socket.output(b"$ ")
        self.assertTrue(process.out.endswith(b"3\r\n$ "))
        session.write(b"ls\r")
        session.write(b"\x03")
        self.assertEqual(socket.stdin(), b"ls\r\x03")
        session.windowChanged((50, 132, 0, 0))
        self.assertEqual(socket.controls()[-1], {"resize": [50, 132]})
        socket.exit(3)
        self.assertEqual(process.exit_status, 3)
        self.assertEqual(socket.close_code, 1000)
        logs = self.session_logs()
        self.assertEqual(
            logs[0], "shell session opened: user=alice site=shop source=192.0.2.7 shell pty=yes"
        )
        self.assertIn(
            "shell session ended: user=alice site=shop source=192.0.2.7 shell pty=yes"
            " (exited, exit status 3",
            logs[1],
        )

    def test_command_without_terminal_keeps_streams_apart(self) -> None:
        """`ssh alice/blog@host cmd`: no TTY, stdout and stderr apart, exit status returned."""
        session, process = self.session(site="blog", pty=None)
        session.execCommand(process, b"cat /site/public/index.html")
        self.clock.advance(0)
        socket = self.bridges.last
        self.assertEqual(self.bridges.opened[0].command, "cat /site/public/index.html")
        socket.output(b"<h1>hi</h1>", stream=1)
        socket.output(b"warning", stream=2)
        session.write(b"input")
        session.eofReceived()
        self.assertEqual(socket.stdin(), b"input")
        self.assertEqual(len(socket.controls()), 1)  # EOF waits until the command runs
        socket.connected()
        self.assertEqual(socket.controls()[-1], {"eof": True})
        socket.exit(0)
        self.assertEqual(
            (process.out, process.err, process.exit_status), (b"<h1>hi</h1>", b"warning", 0)
        )

    def test_shell_without_terminal_reads_commands_from_stdin(self) -> None:
        """`ssh -T alice/blog@host < script`: a login shell reading stdin, without a TTY."""
        self.shell(site="blog", pty=None)
        self.assertEqual(self.bridges.opened[0].command, LOGIN_SHELL)

    def test_exec_needs_a_site(self) -> None:
        """A command without a site in the user name gets a one-line error and status 1."""
        session, process = self.session(pty=None)
        session.execCommand(process, b"ls")
        self.clock.advance(0)
        self.assertEqual(process.err, b"Name the site to run it in: ssh USER/SITE@HOST 'command'\n")
        self.assertEqual(process.exit_status, 1)
        self.assertEqual([c[0] for c in self.fake.calls], ["login"])

    def test_unknown_and_disabled_sites(self) -> None:
        """A site she is not a member of, or a disabled one, is refused in one line."""
        for site, message in (
            ("nosuch", b"You have no site called nosuch.\n"),
            ("old", b"The site old is disabled.\n"),
        ):
            session, process = self.session(site=site, pty=None)
            session.execCommand(process, b"id")
            self.clock.advance(0)
            self.assertEqual((process.err, process.exit_status), (message, 1))
        self.assertEqual(self.bridges.opened, [])
        self.assertEqual(len(self.session_logs()), 2)

    def test_manager_refuses_the_session(self) -> None:
        """If the manager no longer allows the site, its refusal is shown."""
        session, process = self.session(site="blog", pty=None)
        self.fake.users["alice"].sites.discard("blog")
        session.execCommand(process, b"id")
        self.clock.advance(0)
        self.assertEqual(
            (process.err, process.exit_status), (b"You have no site called blog.\n", 1)
        )

    def test_manager_or_orchestrator_unreachable(self) -> None:
        """Infrastructure trouble is one line and status 255, not a traceback."""
        session, process = self.session(site="blog", pty=None)
        self.fake.failing = 500
        session.execCommand(process, b"id")
        self.clock.advance(0)
        self.assertEqual(
            process.err, b"Director cannot open a session right now; try again later.\n"
        )
        self.assertEqual(process.exit_status, 255)
        self.fake.failing = None
        session, process = self.session(site="blog", pty=None)
        self.bridges.fail_next = ConnectionRefusedError()
        session.execCommand(process, b"id")
        self.clock.advance(0)
        self.assertEqual(
            process.err, b"Cannot reach the site's shell right now; try again later.\n"
        )
        self.assertEqual(process.exit_status, 255)
        self.flushLoggedErrors(ConnectionRefusedError)

    def test_menu_garbage_then_give_up(self) -> None:
        """Wrong answers get one line each and the prompt again; the third ends the session."""
        session, process = self.shell()
        process.out = b""
        session.write(b"\x1b[A" + b"z" * 500 + b"\r")
        self.assertIn(b"That is too long", process.out)
        session.write(b"9\r")
        session.write(b"nope\r")
        self.assertTrue(
            process.out.endswith(b"You have no site called nope. Too many tries; goodbye.\r\n")
        )
        self.assertEqual(process.exit_status, 1)
        self.assertEqual(self.bridges.opened, [])

    def test_menu_ctrl_c_and_ctrl_d(self) -> None:
        """Ctrl-C leaves the menu with status 130; Ctrl-D (or EOF) with status 1."""
        session, process = self.shell()
        session.write(b"bl\x03")
        self.assertEqual(process.exit_status, 130)
        session, process = self.shell()
        session.write(b"\x04")
        self.assertEqual(process.exit_status, 1)
        session, process = self.shell(pty=None)
        session.eofReceived()
        self.assertEqual((process.err, process.exit_status), (b"No site chosen.\n", 1))

    def test_typed_ahead_input_and_eof_reach_the_shell(self) -> None:
        """What follows the choice, even in the same packet, reaches the shell once it runs."""
        session, process = self.session(pty=None)
        session.write(b"blog\necho hi\n")  # typed before the shell request was answered
        session.openShell(process)
        session.eofReceived()
        self.clock.advance(0)
        socket = self.bridges.last
        self.assertEqual(self.bridges.opened[0].command, LOGIN_SHELL)
        self.assertEqual(socket.stdin(), b"echo hi\n")
        socket.connected()
        self.assertEqual(socket.controls()[-1], {"eof": True})

    def test_no_sites(self) -> None:
        """A user without sites is told so."""
        _, process = self.shell(user="newbie")
        self.assertEqual((process.out, process.exit_status), (b"You have no sites yet.\r\n", 1))

    def test_idle_session_is_closed(self) -> None:
        """No input or output for the idle timeout closes the session and its bridge."""
        session, process = self.shell(site="blog")
        socket = self.bridges.last
        socket.connected()
        self.clock.advance(IDLE - 1)
        socket.output(b"tick")
        self.clock.advance(IDLE - 1)
        session.write(b"x")
        self.clock.advance(IDLE - 1)
        self.assertEqual(process.ended, [])
        self.clock.advance(1)
        self.assertIn(b"nothing happened for 10 minutes", process.out)
        self.assertEqual(process.exit_status, 255)
        self.assertEqual(socket.close_code, 1000)

    def test_idle_menu_is_closed(self) -> None:
        """Sitting at the menu counts as idle too."""
        _, process = self.shell()
        self.clock.advance(IDLE)
        self.assertEqual(process.exit_status, 255)

    def test_client_leaving_closes_the_bridge(self) -> None:
        """When the channel closes mid-session the websocket is closed, and it is logged."""
        session, process = self.shell(site="blog")
        socket = self.bridges.last
        socket.connected()
        session.closed()
        self.assertEqual(socket.close_code, 1000)
        self.assertIn("(client left", self.session_logs()[-1])
        socket.output(b"late")
        self.assertNotIn(b"late", process.out)
        # Only the connection's own idle timer is left (no session timers, no heartbeats).
        calls: Any = self.clock.getDelayedCalls()
        remaining = [c.func.__qualname__ for c in calls]
        self.assertEqual(remaining, ["ShellUser._idle_expired"])

    def test_client_leaving_while_connecting(self) -> None:
        """A client gone before the bridge opened leaves nothing open."""
        session, process = self.session(site="blog")
        gate: Deferred[None] = Deferred()
        opened: list[Any] = []

        async def slow_open(*args: Any) -> Any:
            await gate
            bridge = await self.bridges(*args)
            opened.append(bridge)
            return bridge

        session._context = SessionContext(self.clock, self.accounts, slow_open, IDLE)
        session.openShell(process)
        self.clock.advance(0)
        session.closed()
        gate.callback(None)
        self.assertEqual(self.bridges.last.close_code, 1000)

    def test_orchestrator_errors(self) -> None:
        """An error frame, a closed session or a dropped socket become one line and 255."""
        for play, message in (
            (
                lambda s: s.error("the token was already used", "replayed"),
                b"refused the session token",
            ),
            (lambda s: s.error("boom"), b"could not start: boom"),
            (lambda s: s._text({"closed": "idle"}), b"closed the session (idle)"),
            (lambda s: s.drop(), b"connection to the site was lost"),
        ):
            _, process = self.shell(site="blog", pty=None)
            play(self.bridges.last)
            self.assertIn(message, process.err)
            self.assertEqual(process.exit_status, 255)

    def test_start_timeout_and_heartbeats(self) -> None:
        """A shell that never says "connected" is given up on; a running one gets heartbeats."""
        session, process = self.shell(site="blog")
        self.clock.advance(START_TIMEOUT)
        self.assertIn(b"did not start in time", process.out)
        session, process = self.shell(site="blog")
        socket = self.bridges.last
        socket.connected()
        self.clock.advance(HEARTBEAT_INTERVAL)
        session.write(b"x")
        self.assertEqual(socket.controls()[-1], {"heartbeat": 1})

    def test_output_waits_for_the_client(self) -> None:
        """When the client's window is full, reading from the site pauses until it has room."""
        session, _ = self.shell(site="blog")
        socket = self.bridges.last
        session.output_paused(True)
        self.assertEqual(socket.transport.producerState, "paused")
        session.output_paused(False)
        self.assertEqual(socket.transport.producerState, "producing")

    def test_resizes_before_the_shell_runs_are_kept(self) -> None:
        """
        A resize while the orchestrator is still starting the shell (which would drop it)
        is sent once the shell runs; only the latest size counts.
        """
        session, _ = self.shell(site="blog")
        socket = self.bridges.last
        session.windowChanged((30, 90, 0, 0))
        session.windowChanged((31, 91, 0, 0))
        self.assertEqual(len(socket.controls()), 1)
        socket.connected()
        self.assertEqual(socket.controls()[1:], [{"resize": [31, 91]}])

    def test_input_while_connecting_is_held_not_dropped(self) -> None:
        """
        Megabytes piped in before the bridge is up are all kept: past the pending limit the
        client's connection is no longer read (nothing is dropped) until the bridge opens.
        """
        from types import SimpleNamespace

        from director.shell.session import MAX_PENDING_INPUT

        class Transport:
            def __init__(self) -> None:
                self.calls: list[str] = []

            def pauseProducing(self) -> None:
                self.calls.append("pause")

            def resumeProducing(self) -> None:
                self.calls.append("resume")

        ssh = Transport()
        session, process = self.session(site="blog", pty=None)
        session._user._conn = SimpleNamespace(transport=SimpleNamespace(transport=ssh))
        gate: Deferred[None] = Deferred()

        async def slow_open(*args: Any) -> Any:
            await gate
            return await self.bridges(*args)

        session._context = SessionContext(self.clock, self.accounts, slow_open, IDLE)
        session.execCommand(process, b"cat > blob")
        self.clock.advance(0)
        chunk = bytes(range(256)) * 256  # 64 KiB
        count = 3 * MAX_PENDING_INPUT // len(chunk)
        for _ in range(count):
            session.write(chunk)
        session.eofReceived()
        self.assertEqual(ssh.calls, ["pause"])  # held once, past the limit
        gate.callback(None)
        self.clock.advance(0)
        socket = self.bridges.last
        socket.connected()
        self.assertEqual(ssh.calls, ["pause", "resume"])
        self.assertEqual(socket.stdin(), chunk * count)
        self.assertEqual(socket.controls()[-1], {"eof": True})

    def test_odd_window_sizes(self) -> None:
        """Zero or absurd terminal sizes fall back to 24x80 instead of reaching Docker."""
        session, process = self.session(site="blog", pty=(0, 100000))
        session.openShell(process)
        self.clock.advance(0)
        self.assertEqual((self.bridges.opened[0].rows, self.bridges.opened[0].cols), (24, 80))


class _Recorder:
    def __init__(self) -> None:
        self.disconnects: list[tuple[int, bytes]] = []

    def sendDisconnect(self, reason: int, description: bytes) -> None:
        self.disconnects.append((reason, description))


class _Conn:
    def __init__(self) -> None:
        self.transport = _Recorder()


class ConnectionTests(SynchronousTestCase):
    """The avatar: one per connection, holding its session channels."""

    def setUp(self) -> None:
        self.clock = Clock()
        fake, accounts = in_memory_manager(self.clock)
        fake.add_user("alice", "pw")
        account = self.successResultOf(
            Deferred.fromCoroutine(accounts.check_password("alice", "pw"))
        )
        context = SessionContext(self.clock, accounts, FakeBridges(self.clock), IDLE)
        self.user = ShellUser(ShellLogin(account, None, "password"), "192.0.2.7", context)
        self.conn = _Conn()
        self.user.conn = self.conn

    def test_connection_without_sessions_is_closed_when_idle(self) -> None:
        """`ssh -N` and the like: no session open for the idle timeout closes the connection."""
        channel: Any = object()
        self.user.channel_opened(channel)
        self.clock.advance(IDLE * 3)
        self.assertEqual(self.conn.transport.disconnects, [])
        self.user.channel_closed(channel)
        self.clock.advance(IDLE)
        self.assertEqual(self.conn.transport.disconnects, [(11, b"idle for too long")])

    def test_logout_stops_the_timer(self) -> None:
        """Once the connection is gone nothing is left scheduled."""
        self.user.logout()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_few_sessions_per_connection(self) -> None:
        """A connection may hold only a few session channels at once; others are refused."""
        from twisted.conch.error import ConchError

        from director.shell.avatar import MAX_SESSIONS_PER_CONNECTION

        for _ in range(MAX_SESSIONS_PER_CONNECTION):
            self.user.lookupChannel(b"session", 65536, 32768, b"")
            self.user.channel_opened(object())  # type: ignore[arg-type]
        with self.assertRaises(ConchError):
            self.user.lookupChannel(b"session", 65536, 32768, b"")
        with self.assertRaises(ConchError):
            self.user.lookupChannel(b"direct-tcpip", 65536, 32768, b"")


class FilesAndGitTests(SessionHarness):
    """The sftp subsystem and git's commands, against the fake manager and bridge."""

    def test_sftp_runs_the_images_sftp_server_in_the_site(self) -> None:
        from director.shell.session import SFTP_COMMAND

        session, process = self.session(site="blog", pty=None)
        session.execSubsystem(process, b"sftp")
        self.clock.advance(0)
        self.assertEqual(self.bridges.opened[0].command, SFTP_COMMAND)
        self.assertIn("sftp-server", SFTP_COMMAND)
        self.assertIn("-d /site", SFTP_COMMAND)
        self.bridges.last.connected()
        self.bridges.last.exit(0)
        self.assertEqual(process.exit_status, 0)
        self.assertIn("sftp pty=no", self.session_logs()[0])

    def test_sftp_needs_a_site(self) -> None:
        session, process = self.session(pty=None)
        session.execSubsystem(process, b"sftp")
        self.clock.advance(0)
        self.assertEqual(self.bridges.opened, [])
        self.assertIn(b"Name the site in the user name", process.err)
        self.assertEqual(process.exit_status, 1)

    def test_git_names_the_site_in_the_path(self) -> None:
        """`git-receive-pack '/shop.git'` as plain alice: the deploy script for shop."""
        from director.shell.git import git_command

        session, process = self.session(pty=None)
        session.execCommand(process, b"git-receive-pack '/shop.git'")
        self.clock.advance(0)
        opened = self.bridges.opened[0]
        self.assertEqual(opened.grant.site_name, "shop")
        self.assertEqual(opened.command, git_command("receive-pack", "dynamic"))
        self.assertIn('--work-tree="$target"', opened.command or "")

    def test_git_refusals(self) -> None:
        for login, command, message in [
            (None, b"git-upload-pack '/nosuch.git'", b"You have no site called nosuch."),
            (None, b"git-upload-pack '/old.git'", b"The site old is disabled."),
            ("blog", b"git-upload-pack '/shop.git'", b"That repository is the site shop's"),
            (None, b"git-upload-pack '/../etc.git'", b"Name the site to run it in"),
        ]:
            session, process = self.session(site=login, pty=None)
            session.execCommand(process, command)
            self.clock.advance(0)
            self.assertIn(message, process.err, command)
            self.assertEqual(process.exit_status, 1)
        self.assertEqual(self.bridges.opened, [])

    def test_push_records_the_deploy_and_hides_the_marker(self) -> None:
        commit = "ab" * 20
        session, process = self.session(pty=None)
        session.execCommand(process, b"git-receive-pack '/shop.git'")
        self.clock.advance(0)
        socket = self.bridges.last
        socket.connected()
        socket.output(b"pack data", stream=1)
        socket.output(b"warning: x\n@director-dep", stream=2)
        socket.output(b"loyed " + commit.encode() + b"\n", stream=2)
        socket.exit(0)
        self.assertEqual(process.out, b"pack data")
        self.assertTrue(process.err.startswith(b"warning: x\n"))
        self.assertNotIn(b"@director-deployed", process.err)
        self.assertEqual(
            self.fake.calls[-1],
            ("deploy", {"username": "alice", "site": "shop", "commit": commit}),
        )
        self.assertIn(b"Director: shop now runs abababa.", process.err)
        self.assertEqual(process.exit_status, 0)

    def test_failed_deploy_operation_fails_the_push(self) -> None:
        self.fake.deploy_outcome = ("failed", "restart_process: boom")
        session, process = self.session(pty=None)
        session.execCommand(process, b"git-receive-pack '/shop.git'")
        self.clock.advance(0)
        socket = self.bridges.last
        socket.connected()
        socket.output(b"@director-deployed " + b"cd" * 20 + b"\n", stream=2)
        socket.exit(0)
        self.assertIn(b"restarting shop failed", process.err)
        self.assertNotIn(b"boom", process.err)  # no internal detail for the user
        self.assertEqual(process.exit_status, 1)

    def test_push_without_deploy_asks_nothing(self) -> None:
        session, process = self.session(pty=None)
        session.execCommand(process, b"git-receive-pack '/shop.git'")
        self.clock.advance(0)
        socket = self.bridges.last
        socket.connected()
        socket.exit(1)
        self.assertNotIn("deploy", [path for path, _ in self.fake.calls])
        self.assertEqual(process.exit_status, 1)

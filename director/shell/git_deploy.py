"""
After a C{git push} to a site (L{GitDeploy}): git-receive-pack's hook names the commit it
deployed on stderr; the session hides that line, asks the manager to record the deploy and
restart the site, and says how it went.
"""

from __future__ import annotations

from twisted.python.failure import Failure

from director.shell.accounts import (
    ManagerUnavailable,
    SessionRefused,
)
from director.shell.git import COMMIT, DEPLOYED_MARKER
from director.shell.session_io import EXIT_FAILED, EXIT_REFUSED, SessionIO, log


class GitDeploy(SessionIO):
    """The deploy that follows a push, recorded through the manager."""

    # -- after a git push: the deploy operation ------------------------------------------

    def _filter_deployed(self, data: bytes) -> bytes:
        """git-receive-pack's stderr, without the marker line naming the deployed commit."""
        data = self._stderr_tail + data
        complete, newline, tail = data.rpartition(b"\n")
        out: list[bytes] = []
        if newline:
            for line in complete.split(b"\n"):
                text = line.decode("ascii", "replace")
                if text.startswith(DEPLOYED_MARKER):
                    commit = text[len(DEPLOYED_MARKER) :].strip()
                    self._deployed = commit if COMMIT.match(commit) else None
                else:
                    out.append(line + b"\n")
        if len(tail) > 4096:  # not a marker: nothing to hold back
            out.append(tail)
            tail = b""
        self._stderr_tail = tail
        return b"".join(out)

    async def _record_deploy(self, commit: str) -> None:
        site = self._site or ""
        self._say(f"Director: recording the deploy of {commit[:7]} and restarting {site} ...")
        try:
            result = await self._context.accounts.deploy(self._user.login.username, site, commit)
        except SessionRefused as e:
            self._log_deploy(1, e.code)
            self._say(f"Director: {e.message}")
            self._finish(EXIT_REFUSED)
            return
        except ManagerUnavailable as e:
            log.error("shell deploy for {site}: manager: {error}", site=site, error=str(e))
            self._log_deploy(EXIT_FAILED, "manager unavailable")
            self._say(
                "Director: the files are deployed, but the site could not be restarted now;"
                " restart it from the dashboard."
            )
            self._finish(EXIT_FAILED)
            return
        if result.status == "succeeded":
            self._log_deploy(0, None)
            self._say(f"Director: {site} now runs {commit[:7]}.")
            self._finish(0)
        elif result.status == "failed":
            self._log_deploy(1, "restart failed")
            self._say(
                f"Director: the files are deployed, but restarting {site} failed; see the"
                " site's page in the dashboard."
            )
            self._finish(EXIT_REFUSED)
        else:
            self._log_deploy(0, "restart still running")
            self._say(f"Director: {site} is still restarting; see its page in the dashboard.")
            self._finish(0)

    def _deploy_failed(self, failure: Failure) -> None:
        log.failure("shell deploy for {site}", failure, site=self._site)
        self._log_deploy(EXIT_FAILED, "error")
        self._say(
            "Director: the deploy could not be recorded; restart the site from the dashboard."
        )
        self._finish(EXIT_FAILED)

"""
Who may log in to the shell server. Until the manager's /shell-server/ login endpoints
exist, no credentials are accepted: every password is refused.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred, fail
from zope.interface import implementer


@implementer(ICredentialsChecker)
class RefuseAllChecker:
    credentialInterfaces = (IUsernamePassword,)

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        return fail(UnauthorizedLogin("no shell logins are configured yet"))


@implementer(IRealm)
class ShellRealm:
    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        return fail(UnauthorizedLogin("no shell logins are configured yet"))

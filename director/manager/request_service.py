"""
Site requests: a student asks for an activity site naming a sponsoring teacher, the teacher
approves (or rejects) it, an administrator creates it (through L{SiteService.record_new}) or
rejects it; administrators comment. Each step is audited and mailed to whom it concerns.
No HTTP here: the domain errors (L{ValidationError}, L{Conflict}, L{NotFound},
L{AccessDenied}) are the routes' to render.
"""

from __future__ import annotations

from dataclasses import dataclass

from director.manager import models
from director.manager.access import AccessDenied
from director.manager.mail import Mailer
from director.manager.models import Operation, Site, User, UserLimits, ValidationError
from director.manager.site_service import SiteService, check_name_and_agreement
from director.manager.store import Conflict, NotFound, Store
from director.manager.store.rows import SiteRequest


async def emails(store: Store, usernames: set[str] | None, role: str | None = None) -> list[str]:
    """
    The addresses of the active users of C{store} named in C{usernames} (None: all) and of
    C{role} (None: any).
    """
    return [
        u.email
        for u in await store.list_users()
        if u.email
        and u.is_active
        and (usernames is None or u.username in usernames)
        and (role is None or u.role == role)
    ]


@dataclass(frozen=True)
class Outcome:
    """A request's C{status} after an action; for C{created}, the new C{site} and C{operation}."""

    status: str
    site: Site | None = None
    operation: Operation | None = None


class RequestService:
    """
    The site requests of C{store}: new sites come from C{sites}, mail goes out through
    C{mailer}, the school's name and agreement rules are C{limits}'. The caller wakes the
    operation engine after L{create}.
    """

    def __init__(
        self, store: Store, sites: SiteService, mailer: Mailer, limits: UserLimits
    ) -> None:
        self.store = store
        self.sites = sites
        self.mailer = mailer
        self.limits = limits

    async def visible_to(self, user: User) -> list[SiteRequest]:
        """The requests C{user} may see: all for admins, else theirs."""
        return await self.store.list_requests(None if user.is_admin else user.id)

    async def submit(
        self,
        user: User,
        name: object,
        activity: object,
        description: object,
        teacher_name: object,
        agreement: object,
    ) -> int:
        """
        Record C{user}'s request for the activity site C{name}, sponsored by the teacher
        C{teacher_name}, and mail that teacher; return its id. L{ValidationError} for a bad
        field, L{Conflict} C{unknown_teacher} if C{teacher_name} is not a teacher.
        """
        name = models.validate_site_name(name)
        check_name_and_agreement(self.limits, user, name, "activity", agreement)
        if not isinstance(activity, str) or not 1 <= len(activity) <= 200:
            raise ValidationError("activity", "the club or activity, 1 to 200 characters")
        if not isinstance(teacher_name, str) or not models.USERNAME.fullmatch(teacher_name):
            raise ValidationError("teacher", "the username of a teacher who sponsors the site")
        teacher = await self.store.get_user(teacher_name)
        if teacher is None or not teacher.is_teacher:
            raise Conflict("unknown_teacher", f"{teacher_name} is not a teacher's username")
        request_id = await self.store.create_request(
            user.id,
            teacher.id,
            name,
            activity,
            models.validate_description(description),
        )
        await self.store.audit(user, "request_site", name, {"teacher": teacher.username})
        self.mailer.notify(
            [teacher.email],
            f"Site request: {name}",
            f"{user.username} asks for an activity site '{name}' for {activity}, naming you as "
            "the sponsoring teacher. Approve or reject it on the Requests page of Director.",
        )
        return request_id

    async def comment(self, user: User, request_id: int, values: dict[str, object]) -> SiteRequest:
        """
        Set an administrator's C{values} (C{public_comment}, C{admin_comment}) on the request;
        return it. L{ValidationError} for a bad comment, L{NotFound} for no such request.
        """
        comments = {k: models.validate_description(v) for k, v in values.items()}
        if not await self.store.set_request_comments(request_id, comments):
            raise NotFound(request_id)
        await self.store.audit(user, "comment_request", str(request_id), {})
        return await self._get(request_id)

    async def act(self, user: User, request_id: int, action: str) -> Outcome:
        """
        C{user}'s C{action} on the request: the teacher's (or an admin's) C{approve} or
        C{reject} of a request pending the teacher, an admin's C{create} or C{reject} of one
        pending the administrators. Return the L{Outcome} (for C{create}: the new site and
        its operation; the caller wakes the engine). L{NotFound} if there is no such request
        or C{user} may not know it, L{AccessDenied} if only an admin may do this, L{Conflict}
        C{bad_state} otherwise.
        """
        req = await self._get(request_id)
        if action in ("approve", "reject") and req.status == "pending-teacher":
            if req.teacher != user.username and not user.is_admin:
                raise NotFound(request_id)
            status = "pending-admin" if action == "approve" else "rejected"
            await self.store.set_request_status(request_id, status)
            await self.store.audit(user, f"request_{action}", req.name, {"id": request_id})
            await self._notify(req, status)
            return Outcome(status)
        if action == "create" and req.status == "pending-admin":
            if not user.is_admin:
                raise AccessDenied(403, "forbidden", "only administrators may do this")
            site, op = await self.sites.record_new(
                user,
                req.name,
                "static",
                "activity",
                req.description,
                [req.requester, req.teacher],
            )
            await self.store.set_request_status(request_id, "created", site.id)
            await self._notify(req, "created")
            await self.store.audit(user, "create_site_from_request", site.name, {"id": request_id})
            return Outcome("created", site, op)
        if action == "reject" and req.status == "pending-admin" and user.is_admin:
            await self.store.set_request_status(request_id, "rejected")
            await self._notify(req, "rejected")
            return Outcome("rejected")
        raise Conflict("bad_state", f"cannot {action} a request that is {req.status}")

    async def _get(self, request_id: int) -> SiteRequest:
        found = [r for r in await self.store.list_requests() if r.id == request_id]
        if not found:
            raise NotFound(request_id)
        return found[0]

    async def _notify(self, req: SiteRequest, status: str) -> None:
        """Mail the administrators (C{pending-admin}) or the student (C{created}, C{rejected})."""
        name = req.name
        if status == "pending-admin":
            self.mailer.notify(
                await emails(self.store, None, "admin"),
                f"Site request approved: {name}",
                f"{req.teacher} approved {req.requester}'s request for '{name}'. Create "
                "it with one click on the Requests page of Director.",
            )
        else:
            words = {"created": "was created", "rejected": "was not approved"}[status]
            self.mailer.notify(
                await emails(self.store, {req.requester}),
                f"Your site request: {name}",
                f"Your request for the site '{name}' {words}.",
            )

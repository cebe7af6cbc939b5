"""
The catalogue's rules: what may be put in the image catalogue and the database hosts, and
what may be taken out; each change audited. No HTTP here: the domain errors (L{Conflict},
L{NotFound}, L{ValidationError}) are the routes' to render.
"""

from __future__ import annotations

from typing import Any

from director.contract.databases import DatabaseHost
from director.manager import catalogue
from director.manager.models import User
from director.manager.store import Conflict, Store
from director.manager.store.rows import DatabaseHostRecord, Image


class CatalogueService:
    """
    Changes the image catalogue and the database hosts of C{store} for an administrator
    (the caller checked that), and audits each change.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    async def images_for(self, user: User) -> list[Image]:
        """The images C{user} may choose (admins: all, hidden and teachers-only ones too)."""
        return [i for i in await self.store.list_images() if catalogue.visible_to(user, i)]

    async def put_image(self, actor: User, fields: dict[str, Any]) -> list[Image]:
        """
        Add an image, or change the C{fields} sent of one (the others are kept); return the
        whole catalogue. L{ValidationError} for a bad field, L{Conflict} C{default_visibility}
        if the default image would not be visible to everyone.
        """
        name = fields.get("name")
        current = next((i for i in await self.store.list_images() if i.name == name), None)
        entry = catalogue.validate_entry(fields, current)
        refusal = catalogue.default_refusal(entry)
        if refusal:
            raise Conflict("default_visibility", refusal)
        name = entry.pop("name")
        await self.store.put_image(
            name,
            entry.pop("friendly_name"),
            entry.pop("description"),
            entry.pop("setup_command"),
            entry.pop("is_default"),
            **entry,
        )
        await self.store.audit(actor, "put_image", name, {})
        return await self.store.list_images()

    async def delete_image(self, actor: User, name: str) -> list[Image]:
        """
        Take C{name} out of the catalogue; return what is left. L{NotFound} if it is not in
        it, L{Conflict} while it is the default or a site uses it.
        """
        await self.store.delete_image(name)
        await self.store.audit(actor, "delete_image", name, {})
        return await self.store.list_images()

    async def put_database_host(self, actor: User, host: DatabaseHost) -> int:
        """Record the (already validated) C{host}; return its id."""
        host_id = await self.store.put_database_host(
            host.kind,
            host.admin_host,
            host.admin_port,
            host.admin_user,
            host.admin_password,
            host.container_host,
            host.container_port,
        )
        await self.store.audit(actor, "put_database_host", f"{host.kind}:{host.admin_host}", {})
        return host_id

    async def delete_database_host(self, actor: User, host_id: int) -> DatabaseHostRecord:
        """
        Forget the database host C{host_id}; return it. L{NotFound} if there is none, and
        the store's L{Conflict} while a site's database lives on it.
        """
        host = await self.store.delete_database_host(host_id)
        await self.store.audit(
            actor,
            "delete_database_host",
            f"{host.kind}://{host.admin_host}:{host.admin_port}",
            {},
        )
        return host

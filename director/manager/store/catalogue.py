"""What sites are built on: the image catalogue and the database hosts site databases live on."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred

from director.manager import schema as t
from director.manager.store.base import Conflict, NotFound, StoreBase, new_id
from director.manager.store.rows import DatabaseHostRecord, Image


class CatalogueStore(StoreBase):
    """The image catalogue and the database hosts."""

    def list_images(self) -> Deferred[list[Image]]:
        return self._tx(
            lambda conn: [
                Image(**r._mapping) for r in conn.execute(select(t.images).order_by(t.images.c.id))
            ]
        )

    def put_image(
        self,
        name: str,
        friendly_name: str,
        description: str = "",
        setup_command: str | None = None,
        is_default: bool = False,
        **more: Any,
    ) -> Deferred[None]:
        """Add or change a catalogue entry (C{more}: logo, visibility, run_template)."""

        def put(conn: Connection) -> None:
            if is_default:
                conn.execute(update(t.images).values(is_default=False))
            values = {
                "friendly_name": friendly_name,
                "description": description,
                "setup_command": setup_command,
                "is_default": is_default,
                **more,
            }
            if (
                conn.execute(
                    update(t.images).where(t.images.c.name == name).values(**values)
                ).rowcount
                == 0
            ):
                conn.execute(insert(t.images).values(name=name, **values))

        return self._tx(put)

    def offer_image(
        self, name: str, friendly_name: str, description: str = "", **more: Any
    ) -> Deferred[bool]:
        """
        Put a built image into the catalogue, once ever: whether it was added now. Not when
        it was offered before (an administrator may have deleted it since); an entry already
        there (an administrator's) is left as it is and counts as offered.
        """

        def offer(conn: Connection) -> bool:
            try:
                with conn.begin_nested():
                    offered = insert(t.catalogue_offers).values(name=name, offered_at=self.now())
                    conn.execute(offered)
            except IntegrityError:
                return False  # offered before, or by another `director init` just now
            if conn.execute(select(t.images.c.id).where(t.images.c.name == name)).first():
                return False
            conn.execute(
                insert(t.images).values(
                    name=name,
                    friendly_name=friendly_name,
                    description=description,
                    setup_command=None,
                    is_default=False,
                    **more,
                )
            )
            return True

        return self._tx(offer)

    def delete_image(self, name: str) -> Deferred[None]:
        """
        Take an image out of the catalogue: NotFound if it is not in it, Conflict while it
        is the default or any site is built on it (nothing is changed then).
        """

        def delete_(conn: Connection) -> None:
            row = conn.execute(select(t.images).where(t.images.c.name == name)).first()
            if row is None:
                raise NotFound(name)
            if row.is_default:
                raise Conflict(
                    "default_image", "make another image the default before deleting this one"
                )
            users = conn.execute(
                select(func.count(t.sites.c.id)).where(t.sites.c.image == name)
            ).scalar()
            if users:
                raise Conflict(
                    "image_in_use", f"{users} site(s) use this image; move them to another first"
                )
            conn.execute(delete(t.images).where(t.images.c.id == row.id))

        return self._tx(delete_)

    def delete_database_host(self, host_id: int) -> Deferred[DatabaseHostRecord]:
        """Forget a database host (the one it was): NotFound, or Conflict while in use."""

        def delete_(conn: Connection) -> DatabaseHostRecord:
            row = conn.execute(
                select(t.database_hosts).where(t.database_hosts.c.id == host_id)
            ).first()
            if row is None:
                raise NotFound(host_id)
            used = conn.execute(
                select(func.count(t.databases.c.site_id)).where(t.databases.c.host_id == host_id)
            ).scalar()
            if used:
                raise Conflict(
                    "host_in_use", f"{used} site database(s) are on this host; remove them first"
                )
            conn.execute(delete(t.database_hosts).where(t.database_hosts.c.id == host_id))
            return DatabaseHostRecord(**row._mapping)

        return self._tx(delete_)

    def default_image(self) -> Deferred[str | None]:
        return self._tx(
            lambda conn: conn.execute(
                select(t.images.c.name).where(t.images.c.is_default.is_(True))
            ).scalar()
        )

    def put_database_host(
        self,
        kind: str,
        admin_host: str,
        admin_port: int,
        admin_user: str,
        admin_password: str,
        container_host: str | None,
        container_port: int | None,
    ) -> Deferred[int]:
        def put(conn: Connection) -> int:
            values = {
                "admin_user": admin_user,
                "admin_password": admin_password,
                "container_host": container_host,
                "container_port": container_port,
            }
            where = and_(
                t.database_hosts.c.kind == kind,
                t.database_hosts.c.admin_host == admin_host,
                t.database_hosts.c.admin_port == admin_port,
            )
            row = conn.execute(select(t.database_hosts.c.id).where(where)).first()
            if row:
                conn.execute(update(t.database_hosts).where(where).values(**values))
                return int(row.id)
            result = conn.execute(
                insert(t.database_hosts).values(
                    kind=kind, admin_host=admin_host, admin_port=admin_port, **values
                )
            )
            return new_id(result)

        return self._tx(put)

    def database_host(
        self, kind: str | None = None, host_id: int | None = None
    ) -> Deferred[DatabaseHostRecord | None]:
        def get(conn: Connection) -> DatabaseHostRecord | None:
            query = select(t.database_hosts)
            if host_id is not None:
                query = query.where(t.database_hosts.c.id == host_id)
            if kind is not None:
                query = query.where(t.database_hosts.c.kind == kind)
            row = conn.execute(query.order_by(t.database_hosts.c.id)).first()
            return DatabaseHostRecord(**row._mapping) if row else None

        return self._tx(get)

    def remove_unused_database_host(
        self, kind: str, admin_host: str, admin_port: int
    ) -> Deferred[bool]:
        """Forget a database host no site database is on; False if it is in use or unknown."""

        def remove(conn: Connection) -> bool:
            where = and_(
                t.database_hosts.c.kind == kind,
                t.database_hosts.c.admin_host == admin_host,
                t.database_hosts.c.admin_port == admin_port,
            )
            row = conn.execute(select(t.database_hosts.c.id).where(where)).first()
            if row is None:
                return False
            used = conn.execute(
                select(t.databases.c.host_id).where(t.databases.c.host_id == row.id).limit(1)
            ).first()
            if used is not None:
                return False
            conn.execute(t.database_hosts.delete().where(t.database_hosts.c.id == row.id))
            return True

        return self._tx(remove)

    def list_database_hosts(self) -> Deferred[list[DatabaseHostRecord]]:
        return self._tx(
            lambda conn: [
                DatabaseHostRecord(**r._mapping)
                for r in conn.execute(select(t.database_hosts).order_by(t.database_hosts.c.id))
            ]
        )

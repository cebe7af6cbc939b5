"""Sites with their members, domains and database rows, read and changed together."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, false, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred

from director.manager import schema as t
from director.manager.models import DEFAULT_LIMITS, Database, Operation, Site
from director.manager.store.base import KEEP, Conflict, Keep, NotFound, StoreBase, new_id
from director.manager.store.members import member_sites, set_members
from director.manager.store.operations import insert_operation


class SiteStore(StoreBase):
    """Sites, loaded whole (members, pending members, domains, database, placement)."""

    def _load_sites(
        self, conn: Connection, where: Any = None, limit: int | None = None, offset: int = 0
    ) -> list[Site]:
        query = select(t.sites).order_by(t.sites.c.name)
        if where is not None:
            query = query.where(where)
        if limit is not None:
            query = query.limit(limit).offset(offset)
        rows = conn.execute(query).all()
        if not rows:
            return []
        ids = [r.id for r in rows]
        members: dict[int, list[str]] = {}
        for m in conn.execute(
            select(t.site_members.c.site_id, t.users.c.username)
            .join(t.users, t.users.c.id == t.site_members.c.user_id)
            .where(t.site_members.c.site_id.in_(ids))
            .order_by(t.users.c.username)
        ):
            members.setdefault(m.site_id, []).append(m.username)
        pending: dict[int, list[str]] = {}
        for m in conn.execute(
            select(t.pending_members.c.site_id, t.pending_members.c.username)
            .where(t.pending_members.c.site_id.in_(ids))
            .order_by(t.pending_members.c.username)
        ):
            pending.setdefault(m.site_id, []).append(m.username)
        domain_map: dict[int, list[str]] = {}
        for d in conn.execute(
            select(t.domains).where(t.domains.c.site_id.in_(ids)).order_by(t.domains.c.id)
        ):
            domain_map.setdefault(d.site_id, []).append(d.domain)
        dbs: dict[int, Database] = {}
        for d in conn.execute(
            select(
                t.databases,
                t.database_hosts.c.kind,
                t.database_hosts.c.admin_host,
                t.database_hosts.c.admin_port,
                t.database_hosts.c.container_host,
                t.database_hosts.c.container_port,
            )
            .join(t.database_hosts, t.database_hosts.c.id == t.databases.c.host_id)
            .where(t.databases.c.site_id.in_(ids))
        ):
            dbs[d.site_id] = Database(
                kind=d.kind,
                name=d.name,
                username=d.username,
                password=d.password,
                host=d.container_host or d.admin_host,
                port=d.container_port or d.admin_port,
                host_id=d.host_id,
            )
        placed = {r.orchestrator_id for r in rows} - {None}
        orchestrators = (
            dict(
                conn.execute(
                    select(t.orchestrators.c.id, t.orchestrators.c.name).where(
                        t.orchestrators.c.id.in_(placed)
                    )
                ).all()
            )
            if placed
            else {}
        )
        return [
            Site(
                id=r.id,
                name=r.name,
                type=r.type,
                purpose=r.purpose,
                availability=r.availability,
                description=r.description,
                image=r.image,
                image_tag=r.image_tag,
                packages=tuple(r.packages or ()),
                limits={
                    "cpus": r.cpus,
                    "memory_mb": r.memory_mb,
                    "pids": r.pids,
                    "client_max_body_size": r.client_max_body_size,
                    "disk_quota_mb": r.disk_quota_mb,
                },
                members=tuple(members.get(r.id, [])),
                pending_members=tuple(pending.get(r.id, [])),
                domains=tuple(domain_map.get(r.id, [])),
                database=dbs.get(r.id),
                admin_comments=r.admin_comments,
                public_comment=r.public_comment,
                created_at=r.created_at,
                disk_usage_bytes=r.disk_usage_bytes,
                disk_quota_bytes=r.disk_quota_bytes,
                orchestrator=orchestrators.get(r.orchestrator_id),
                nginx_snippet=r.nginx_snippet,
            )
            for r in rows
        ]

    def set_disk_usage(self, usage: dict[int, tuple[int | None, int | None]]) -> Deferred[int]:
        """Record each site's disk use and quota (bytes) as its orchestrator reported them."""

        def record(conn: Connection) -> int:
            changed = 0
            for site_id, (used, quota) in usage.items():
                result = conn.execute(
                    update(t.sites)
                    .where(t.sites.c.id == site_id)
                    .values(disk_usage_bytes=used, disk_quota_bytes=quota)
                )
                changed += result.rowcount
            return changed

        return self._tx(record)

    def largest_sites(self, limit: int = 20) -> Deferred[list[Site]]:
        """The sites using the most disk, largest first (sites not measured yet left out)."""

        def largest(conn: Connection) -> list[Site]:
            ids = [
                r.id
                for r in conn.execute(
                    select(t.sites.c.id)
                    .where(t.sites.c.disk_usage_bytes.is_not(None))
                    .order_by(t.sites.c.disk_usage_bytes.desc(), t.sites.c.name)
                    .limit(limit)
                )
            ]
            if not ids:
                return []
            by_id = {s.id: s for s in self._load_sites(conn, t.sites.c.id.in_(ids))}
            return [by_id[i] for i in ids if i in by_id]

        return self._tx(largest)

    def get_site(self, name: str) -> Deferred[Site | None]:
        def get(conn: Connection) -> Site | None:
            found = self._load_sites(conn, t.sites.c.name == name)
            return found[0] if found else None

        return self._tx(get)

    def get_site_by_id(self, site_id: int) -> Deferred[Site | None]:
        def get(conn: Connection) -> Site | None:
            found = self._load_sites(conn, t.sites.c.id == site_id)
            return found[0] if found else None

        return self._tx(get)

    def list_sites(
        self,
        member: str | None = None,
        search: list[tuple[str, str]] | None = None,
        limit: int = 500,
        offset: int = 0,
    ) -> Deferred[list[Site]]:
        """
        Sites (only C{member}'s when given) matching every search term (see
        L{models.parse_query}): name, description (any case) and member, exact id.
        """

        def list_(conn: Connection) -> list[Site]:
            clauses: list[Any] = []
            if member is not None:
                clauses.append(t.sites.c.id.in_(member_sites(member)))
            for key, value in search or ():
                escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                pattern = f"%{escaped}%"
                name = t.sites.c.name.ilike(pattern, escape="\\")
                description = t.sites.c.description.ilike(pattern, escape="\\")
                if key == "name":
                    clauses.append(name)
                elif key == "desc":
                    clauses.append(description)
                elif key == "user":
                    clauses.append(t.sites.c.id.in_(member_sites(value)))
                elif key == "id":
                    number = int(value) if value.isdigit() and len(value) <= 12 else None
                    clauses.append(t.sites.c.id == number if number is not None else false())
                elif key == "any":
                    clauses.append(or_(name, description))
            return self._load_sites(conn, and_(*clauses) if clauses else None, limit, offset)

        return self._tx(list_)

    def highest_site_id(self) -> Deferred[int]:
        """The highest site id this database ever gave (0 for none)."""

        def get(conn: Connection) -> int:
            given = conn.execute(select(func.max(t.site_ids.c.id))).scalar()
            seen = conn.execute(select(func.max(t.operations.c.site_id))).scalar()
            return max(int(given or 0), int(seen or 0))

        return self._tx(get)

    def count_sites(self) -> Deferred[int]:
        return self._tx(
            lambda conn: int(conn.execute(select(func.count(t.sites.c.id))).scalar() or 0)
        )

    def create_site(
        self,
        fields: dict[str, Any],
        members: list[str],
        operation: tuple[str, list[str]],
        created_by: int | None,
    ) -> Deferred[tuple[Site, Operation]]:
        """Insert a site, its members and its create operation together (or nothing)."""

        def create(conn: Connection) -> tuple[Site, Operation]:
            values = dict(fields)
            limits = values.pop("limits", DEFAULT_LIMITS)
            site_id = new_id(conn.execute(insert(t.site_ids)))
            try:
                conn.execute(
                    insert(t.sites).values(
                        **values,
                        id=site_id,
                        cpus=limits["cpus"],
                        memory_mb=limits["memory_mb"],
                        pids=limits["pids"],
                        client_max_body_size=limits["client_max_body_size"],
                        disk_quota_mb=limits.get("disk_quota_mb"),
                        created_at=self.now(),
                    )
                )
            except IntegrityError:
                raise Conflict("name_taken", f"the name {fields['name']} is taken") from None
            set_members(conn, site_id, members, self.now())
            op = insert_operation(
                conn,
                site_id,
                fields["name"],
                operation[0],
                operation[1],
                {},
                created_by,
                self.now(),
            )
            return self._load_sites(conn, t.sites.c.id == site_id)[0], op

        return self._tx(create)

    def update_site(
        self,
        site_id: int,
        values: dict[str, Any],
        members: list[str] | None = None,
        domains: list[str] | None = None,
        operation: tuple[str, list[str]] | None = None,
        params: dict[str, Any] | None = None,
        created_by: int | None = None,
        database: dict[str, Any] | Keep | None = KEEP,
    ) -> Deferred[tuple[Site, Operation | None]]:
        """
        Change a site (its record, members, domains and database row) and start the
        operation that applies it, atomically: a refused operation changes nothing.
        """

        def change(conn: Connection) -> tuple[Site, Operation | None]:
            current = self._load_sites(conn, t.sites.c.id == site_id)
            if not current:
                raise NotFound(site_id)
            update_values = dict(values)
            limits = update_values.pop("limits", None)
            if limits is not None:
                update_values.update(
                    cpus=limits["cpus"],
                    memory_mb=limits["memory_mb"],
                    pids=limits["pids"],
                    client_max_body_size=limits["client_max_body_size"],
                    disk_quota_mb=limits.get("disk_quota_mb"),
                )
            op = None
            if operation is not None:
                op = insert_operation(
                    conn,
                    site_id,
                    update_values.get("name", current[0].name),
                    operation[0],
                    operation[1],
                    params or {},
                    created_by,
                    self.now(),
                )
            if update_values:
                try:
                    conn.execute(
                        update(t.sites).where(t.sites.c.id == site_id).values(**update_values)
                    )
                except IntegrityError:
                    raise Conflict("name_taken", "that name is taken") from None
            if members is not None:
                set_members(conn, site_id, members, self.now())
            if domains is not None:
                conn.execute(delete(t.domains).where(t.domains.c.site_id == site_id))
                for domain in domains:
                    try:
                        with conn.begin_nested():
                            conn.execute(
                                insert(t.domains).values(
                                    site_id=site_id, domain=domain, created_at=self.now()
                                )
                            )
                    except IntegrityError:
                        raise Conflict(
                            "domain_taken", f"{domain} is already used by another site"
                        ) from None
            if not isinstance(database, Keep):
                self._set_database(conn, site_id, database)
            return self._load_sites(conn, t.sites.c.id == site_id)[0], op

        return self._tx(change)

    def _set_database(
        self, conn: Connection, site_id: int, database: dict[str, Any] | None
    ) -> None:
        conn.execute(delete(t.databases).where(t.databases.c.site_id == site_id))
        if database is not None:
            conn.execute(
                insert(t.databases).values(site_id=site_id, created_at=self.now(), **database)
            )

    def delete_site_rows(self, site_id: int) -> Deferred[None]:
        def remove(conn: Connection) -> None:
            conn.execute(delete(t.sites).where(t.sites.c.id == site_id))

        return self._tx(remove)

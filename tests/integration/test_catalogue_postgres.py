"""
Migration 0009 (catalogue fields, a site's nginx snippet) on a real PostgreSQL: up, the
schema the code declares, down (a hidden image is not public again) and up again.
"""

from __future__ import annotations

from director.common.threads import fired
from director.testing.manager import static_site_fields
from director.testing.manager_database import Schema


def test_catalogue_migration_on_postgresql(postgres_schema: Schema) -> None:
    db = postgres_schema
    db.upgrade()
    assert db.differences() == []
    store = db.store()
    fired(store.create_user("alice", "student"))
    fired(store.create_site(static_site_fields("blog"), ["alice"], ("create_site", []), None))
    fired(
        store.put_image(
            "director/node:18", "Node.js", "", "npm -v", False, visibility="hidden", logo="nodejs"
        )
    )
    site = fired(store.get_site("blog"))
    assert site is not None
    fired(store.update_site(site.id, {"nginx_snippet": "add_header X-A b;\n"}))
    updated = fired(store.get_site("blog"))
    assert updated is not None and updated.nginx_snippet == "add_header X-A b;\n"
    db.downgrade("0008_orchestrators")
    assert "nginx_snippet" not in db.columns("sites")
    assert db.scalar("SELECT is_public FROM images") is False
    assert db.scalar("SELECT COUNT(*) FROM site_members") == 1
    db.upgrade()
    assert db.differences() == []
    assert db.scalar("SELECT visibility FROM images") == "hidden"

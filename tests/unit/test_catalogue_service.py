"""
L{CatalogueService} directly, over the store on a test database: what may be put in the
image catalogue and the database hosts, what may be taken out, and the audit of each.
"""

from __future__ import annotations

from typing import TypeVar

import pytest

from director.contract.databases import DatabaseHost
from director.contract.errors import ValidationError
from director.manager.catalogue_service import CatalogueService
from director.manager.models import User
from director.manager.store import Conflict, NotFound
from director.testing.manager import ServiceTestCase, create_static_site

pytestmark = pytest.mark.manager_store

T = TypeVar("T")

NODE = "director/node:18"
PYTHON = "director/python:3"


class CatalogueServiceTests(ServiceTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.service = CatalogueService(self.h.store)
        self.admin: User = self.h.result(self.h.store.create_user("root", "admin", None))
        self.student: User = self.h.result(self.h.store.create_user("alice", "student", None))
        self.h.result(self.h.store.put_image(PYTHON, "Python 3", "", None, True))

    def test_put_image_adds_edits_and_audits(self) -> None:
        """An image is added, an edit keeps the fields not sent, and each is audited."""
        self.run_(self.service.put_image(self.admin, {"name": NODE, "logo": "nodejs"}))
        images = self.run_(self.service.put_image(self.admin, {"name": NODE, "description": "x"}))
        node = next(i for i in images if i.name == NODE)
        self.assertEqual((node.logo, node.description), ("nodejs", "x"))
        self.assertEqual(self.audited().count(("put_image", NODE)), 2)

    def test_put_image_refusals_change_nothing(self) -> None:
        """Bad fields and a default not visible to everyone are refused, unchanged, unaudited."""
        before = self.h.result(self.h.store.list_images())
        error = self.fails(self.service.put_image(self.admin, {"name": NODE, "logo": "bad:"}))
        self.assertIsInstance(error, ValidationError)
        error = self.fails(
            self.service.put_image(self.admin, {"name": PYTHON, "visibility": "hidden"})
        )
        self.assertIsInstance(error, Conflict)
        assert isinstance(error, Conflict)
        self.assertEqual(error.code, "default_visibility")
        self.assertEqual(self.h.result(self.h.store.list_images()), before)
        self.assertEqual(self.audited(), [])

    def test_images_for_hides_restricted_images(self) -> None:
        """A student is offered only images for everyone; an admin every image."""
        self.run_(self.service.put_image(self.admin, {"name": NODE, "visibility": "hidden"}))
        names = [i.name for i in self.run_(self.service.images_for(self.student))]
        self.assertEqual(names, [PYTHON])
        names = [i.name for i in self.run_(self.service.images_for(self.admin))]
        self.assertEqual(names, [PYTHON, NODE])

    def test_delete_image_refused_while_default_or_in_use(self) -> None:
        """The default image and one a site is built on stay; others go, audited."""
        self.assertIsInstance(self.fails(self.service.delete_image(self.admin, PYTHON)), Conflict)
        self.assertIsInstance(self.fails(self.service.delete_image(self.admin, NODE)), NotFound)
        self.run_(self.service.put_image(self.admin, {"name": NODE}))
        site, _ = self.h.result(create_static_site(self.h.store, "web", "alice"))
        self.h.result(self.h.store.update_site(site.id, {"image": NODE}))
        self.assertIsInstance(self.fails(self.service.delete_image(self.admin, NODE)), Conflict)
        self.h.result(self.h.store.update_site(site.id, {"image": PYTHON}))
        images = self.run_(self.service.delete_image(self.admin, NODE))
        self.assertEqual([i.name for i in images], [PYTHON])
        self.assertIn(("delete_image", NODE), self.audited())

    def test_database_hosts(self) -> None:
        """A host is recorded and forgotten, each audited; an unknown one is NotFound."""
        host = DatabaseHost("postgres", "10.0.0.5", 5432, "postgres", "x" * 12)
        host_id = self.run_(self.service.put_database_host(self.admin, host))
        self.assertIsInstance(host_id, int)
        gone = self.run_(self.service.delete_database_host(self.admin, host_id))
        self.assertEqual(gone.admin_host, "10.0.0.5")
        self.assertEqual(
            set(self.audited()),
            {
                ("put_database_host", "postgres:10.0.0.5"),
                ("delete_database_host", "postgres://10.0.0.5:5432"),
            },
        )
        self.assertIsInstance(
            self.fails(self.service.delete_database_host(self.admin, 999)), NotFound
        )

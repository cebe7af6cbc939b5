"""
The built images `director init` puts into the catalogue by itself (Node.js, PHP): on an
existing installation too, as soon as the image is built, but once only, so that an entry an
administrator deleted stays deleted. Through the store (with two managers racing) and through
`director init` itself, whose Docker look-up (L{image_present}) is the one part replaced.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import pytest
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from director.cli import main as director_main
from director.common.config import load_config
from director.common.threads import InlineRunner
from director.manager.service import database_url
from director.manager.store import Store
from director.orchestrator import images
from director.orchestrator.images import NODE_IMAGE, PHP_IMAGE, PYTHON_IMAGE
from director.testing import manager_database
from director.testing.races import in_step

pytestmark = pytest.mark.manager_store


class OfferTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.url = manager_database.database_url(Path(tempfile.mkdtemp()))
        self.store = Store(manager_database.engine(self.url), InlineRunner())

    def names(self) -> list[str]:
        return [i.name for i in self.successResultOf(self.store.list_images())]

    def test_offered_once(self) -> None:
        offer = self.store.offer_image
        self.assertTrue(self.successResultOf(offer(NODE_IMAGE, "Node.js 18", "n", logo="nodejs")))
        image = self.successResultOf(self.store.list_images())[0]
        self.assertEqual(
            (image.name, image.friendly_name, image.logo, image.is_default, image.visibility),
            (NODE_IMAGE, "Node.js 18", "nodejs", False, "everyone"),
        )
        self.assertFalse(self.successResultOf(offer(NODE_IMAGE, "Node.js 18")))
        self.successResultOf(self.store.delete_image(NODE_IMAGE))
        self.assertFalse(self.successResultOf(offer(NODE_IMAGE, "Node.js 18")))
        self.assertEqual(self.names(), [], "a deleted entry is not added back")

    def test_an_administrators_entry_is_kept_and_counts_as_offered(self) -> None:
        self.successResultOf(self.store.put_image(PHP_IMAGE, "Our PHP", "mine"))
        self.assertFalse(self.successResultOf(self.store.offer_image(PHP_IMAGE, "PHP 8.2")))
        image = self.successResultOf(self.store.list_images())[0]
        self.assertEqual((image.friendly_name, image.description), ("Our PHP", "mine"))
        self.successResultOf(self.store.delete_image(PHP_IMAGE))
        self.assertFalse(self.successResultOf(self.store.offer_image(PHP_IMAGE, "PHP 8.2")))
        self.assertEqual(self.names(), [])

    def test_two_managers_offer_at_once(self) -> None:
        """Real threads, one engine each, released together: one adds each image."""
        stores = [self.store, Store(manager_database.engine(self.url), InlineRunner())]
        tags = [f"example/image-{i}:1" for i in range(10)]
        answers = in_step(
            len(tags), *(lambda i, s=store: s.offer_image(tags[i], tags[i]) for store in stores)
        )
        self.assertEqual([a for a in answers[0] + answers[1] if isinstance(a, Failure)], [])
        self.assertEqual([a + b for a, b in zip(*answers, strict=True)], [1] * len(tags))
        self.assertEqual(sorted(self.names()), tags)


class InitTests(SynchronousTestCase):
    """`director init` run again and again, as `make run` does, while images get built."""

    def setUp(self) -> None:
        directory = Path(tempfile.mkdtemp())
        url = manager_database.database_url(directory, migrated=False)
        self.config = directory / "director.toml"
        self.args = [
            "init",
            "--config",
            str(self.config),
            "--state-dir",
            str(directory / "var"),
            "--set",
            "manager.bcrypt_rounds=4",
            *manager_database.init_settings(url),
        ]
        self.built: set[str] = set()
        self.patch(images, "image_present", lambda tag: tag in self.built)

    def init(self) -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(director_main(self.args), 0)
        return out.getvalue()

    def store(self) -> Store:
        """The store `director init` wrote (the state dir's SQLite file, or PostgreSQL)."""
        url = database_url(load_config(self.config))
        return Store(manager_database.engine(url), InlineRunner())

    def names(self) -> list[str]:
        return sorted(i.name for i in self.successResultOf(self.store().list_images()))

    def test_built_images_join_an_existing_catalogue_once(self) -> None:
        self.init()  # no image built yet: Python and Debian are listed anyway
        before = self.names()
        self.assertIn(PYTHON_IMAGE, before)
        self.assertNotIn(NODE_IMAGE, before)
        self.built.add(NODE_IMAGE)  # `director images bootstrap` built Node.js since
        self.assertIn(f"added {NODE_IMAGE} to the image catalogue", self.init())
        self.assertEqual(self.names(), sorted([*before, NODE_IMAGE]))
        self.assertNotIn("added", self.init())  # the next run: nothing new
        self.successResultOf(self.store().delete_image(NODE_IMAGE))  # the administrator's choice
        self.built.add(PHP_IMAGE)
        out = self.init()
        self.assertIn(f"added {PHP_IMAGE}", out)
        self.assertNotIn(NODE_IMAGE, out)
        self.assertEqual(self.names(), sorted([*before, PHP_IMAGE]))

    def test_a_new_catalogue_gets_what_is_built(self) -> None:
        self.built.update({NODE_IMAGE, PHP_IMAGE})
        self.init()
        self.assertTrue({NODE_IMAGE, PHP_IMAGE, PYTHON_IMAGE} <= set(self.names()))

    def test_an_entry_added_before_it_was_built_is_not_added_back(self) -> None:
        self.init()
        store = self.store()
        self.successResultOf(store.put_image(NODE_IMAGE, "Node", "added by hand"))
        self.init()  # not built here, but in the catalogue: offered
        self.successResultOf(store.delete_image(NODE_IMAGE))
        self.built.add(NODE_IMAGE)
        self.assertNotIn("added", self.init())
        self.assertNotIn(NODE_IMAGE, self.names())

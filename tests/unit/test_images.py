"""`director images bootstrap` rebuilds base images whose recipe version label is stale."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from director.orchestrator import images


class StalenessTests(SynchronousTestCase):
    def inspect(self, answers: dict[str, Any]) -> list[list[str]]:
        """Make `docker image inspect` answer from C{answers}; record every command run."""
        commands: list[list[str]] = []

        def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
            commands.append(argv)
            if argv[:3] == ["docker", "image", "inspect"]:
                labels = answers.get(argv[-1])
                if labels is None:
                    return subprocess.CompletedProcess(argv, 1, b"", b"No such image")
                return subprocess.CompletedProcess(argv, 0, json.dumps(labels).encode(), b"")
            return subprocess.CompletedProcess(argv, 0, b"", b"")

        self.patch(images.subprocess, "run", run)
        return commands

    def test_current_images_are_kept(self) -> None:
        current = {images.VERSION_LABEL: images.IMAGE_VERSION}
        commands = self.inspect(
            {tag: current for tag in (images.BASE_IMAGE, images.PYTHON_IMAGE, images.NODE_IMAGE)}
            | {images.PHP_IMAGE: current}
        )
        self.assertEqual(images.bootstrap(log=lambda *_: None), [])
        self.assertTrue(all(c[:3] == ["docker", "image", "inspect"] for c in commands))

    def test_unlabelled_python_image_is_rebuilt_alone(self) -> None:
        current = {images.VERSION_LABEL: images.IMAGE_VERSION}
        commands = self.inspect(
            {
                images.BASE_IMAGE: current,
                images.PYTHON_IMAGE: {},
                images.NODE_IMAGE: current,
                images.PHP_IMAGE: current,
            }
        )
        self.assertEqual(images.bootstrap(log=lambda *_: None), [images.PYTHON_IMAGE])
        self.assertIn(["docker", "build", "-q", "-t", images.PYTHON_IMAGE, "-"], commands)

    def test_only_builds_the_images_named(self) -> None:
        """`--only` builds just the images asked for (make test builds only what it needs)."""
        current = {images.VERSION_LABEL: images.IMAGE_VERSION}
        self.inspect({images.BASE_IMAGE: current})
        built = images.bootstrap(log=lambda *_: None, only=(images.NODE_IMAGE,))
        self.assertEqual(built, [images.NODE_IMAGE])

    def test_node_and_php_recipes(self) -> None:
        """Node.js (with npm) and PHP (cli and fpm) come from Debian, on the same base."""
        self.assertIn("nodejs npm", images.NODE_DOCKERFILE)
        self.assertIn("php-cli php-fpm", images.PHP_DOCKERFILE)
        for dockerfile in (images.NODE_DOCKERFILE, images.PHP_DOCKERFILE):
            self.assertTrue(dockerfile.startswith(f"FROM {images.BASE_IMAGE}\n"))
            self.assertIn(f"LABEL {images.VERSION_LABEL}={images.IMAGE_VERSION}", dockerfile)

    def test_recipe_has_the_transfer_tools_and_the_label(self) -> None:
        for package in ("openssh-sftp-server", "rsync", "git", "python3"):
            self.assertIn(package, images.BASE_PACKAGES)
        self.assertIn(
            f"LABEL {images.VERSION_LABEL}={images.IMAGE_VERSION}", images.PYTHON_DOCKERFILE
        )

    def test_the_version_label_follows_the_recipe(self) -> None:
        """
        The label is a digest of the recipe: adding a package (as the database clients were)
        makes every image stale, so `make images` and the tests' image step rebuild them.
        """
        parts = (" ".join(images.BASE_PACKAGES), images.SOURCES, " ".join(images.TRIMMED))
        derived = (images.PYTHON_RECIPE, images.NODE_RECIPE, images.PHP_RECIPE)
        self.assertEqual(images.recipe_version(*parts, *derived), images.IMAGE_VERSION)
        more = " ".join((*images.BASE_PACKAGES, "mariadb-client"))
        self.assertNotEqual(images.recipe_version(more, *parts[1:], *derived), images.IMAGE_VERSION)
        node = images.NODE_RECIPE.replace("npm", "npm yarnpkg")
        self.assertNotEqual(
            images.recipe_version(*parts, images.PYTHON_RECIPE, node, images.PHP_RECIPE),
            images.IMAGE_VERSION,
        )
        for package in ("postgresql-client", "mariadb-client-core"):
            self.assertIn(package, images.BASE_PACKAGES)  # the terminal's database shell

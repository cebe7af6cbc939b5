"""Site image builds: the package check in the Dockerfile and failures in plain words."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from director.orchestrator.images import MISSING_MARK, ImageError, ImageRequest, build_failure


class ImageBuildTests(SynchronousTestCase):
    def test_packages_are_checked_against_the_index_before_installing(self) -> None:
        dockerfile = ImageRequest("director/python:3", ("git", "curl", "git")).dockerfile()
        run = dockerfile.splitlines()[-1]
        check = run.index("apt-cache show")
        self.assertLess(run.index("apt-get update"), check)
        self.assertLess(check, run.index("apt-get install"))
        self.assertIn("for p in curl git;", run)
        self.assertIn(MISSING_MARK, run)
        self.assertNotIn("apt-cache", ImageRequest("director/python:3", ()).dockerfile())

    def test_each_setup_command_is_one_run_step(self) -> None:
        """The catalogue's setup commands run in order, one RUN each, before the packages."""
        lines = (
            ImageRequest("director/python:3", ("git",), ("pip install flask", "echo ok"))
            .dockerfile()
            .splitlines()
        )
        self.assertEqual(
            lines[:3], ["FROM director/python:3", "RUN pip install flask", "RUN echo ok"]
        )
        self.assertIn("apt-get install", lines[3])

    def test_a_setup_command_cannot_add_dockerfile_lines(self) -> None:
        """A line break, or a trailing backslash (joining the next line), is refused."""
        for bad in ("echo a\nUSER root", "echo a \\", "echo a\rb", " ", "x" * 1001):
            with self.assertRaises(ImageError):
                ImageRequest("director/python:3", (), (bad,)).dockerfile()
        with self.assertRaises(ImageError):
            ImageRequest("director/python:3", (), ("true",) * 21).dockerfile()

    def test_a_missing_package_is_named(self) -> None:
        log = f"Reading package lists...\n{MISSING_MARK} pyton3 gti\n"
        message = build_failure("building x failed: returned a non-zero code: 100", log, 1024)
        self.assertIn("no packages called gti, pyton3", message)
        self.assertIn("Nothing was changed", message)
        message = build_failure("failed", "E: Unable to locate package pyton3\n", 1024)
        self.assertIn("no package called pyton3", message)

    def test_time_memory_and_mirror(self) -> None:
        message = build_failure("building director/site-1:2 took longer than 900 s", "", 1024)
        self.assertIn("director/site-1:2 took longer than 900 s and was stopped", message)
        message = build_failure(
            "building t failed: The command '/bin/sh -c x' returned a non-zero code: 137", "", 512
        )
        self.assertIn("ran out of memory (it may use 512 MB)", message)
        message = build_failure("failed", "Temporary failure resolving 'deb.debian.org'", 512)
        self.assertIn("could not reach the Debian mirror", message)
        self.assertIn("(weird)", build_failure("weird", "", 512))

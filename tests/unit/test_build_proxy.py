"""
Image builds through a proxy (a node with no route out reaches the Debian mirror so): the
setting is checked, and the build's RUN steps get it as build arguments, which Docker keeps
out of the image.
"""

from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from director.common.config import ConfigError, parse_config
from director.common.threads import InlineRunner
from director.orchestrator.docker_gateway import BuildLimits, DockerGateway


class _BuildingClient:
    """What the gateway's build calls of the docker SDK's client, recording the build's."""

    def __init__(self) -> None:
        self.builds: list[dict[str, Any]] = []
        self.tags: list[tuple[str, str, str]] = []

    def build(self, **kwargs: Any) -> Any:
        self.builds.append(kwargs)
        step = {"stream": "Step 1/2 : FROM director/python:3\n"}
        return iter([step, {"aux": {"ID": "sha256:1"}}])

    def tag(self, image: str, repository: str, tag: str) -> None:
        self.tags.append((image, repository, tag))


class BuildProxyTests(SynchronousTestCase):
    def build(self, limits: BuildLimits) -> _BuildingClient:
        client = _BuildingClient()
        gateway = DockerGateway(InlineRunner(), lambda: client, builds=limits)
        done = gateway.build_image("FROM director/python:3\n", "director/site-1:2", lambda _: None)
        self.successResultOf(done)
        self.assertEqual(client.tags, [("sha256:1", "director/site-1", "2")])
        return client

    def test_the_proxy_goes_to_the_build_as_arguments(self) -> None:
        """apt's http_proxy and Docker's predefined HTTP_PROXY, both the proxy."""
        proxy = "http://10.77.0.254:3142"
        client = self.build(BuildLimits(InlineRunner(), proxy=proxy))
        [build] = client.builds
        self.assertEqual(build["buildargs"], {"http_proxy": proxy, "HTTP_PROXY": proxy})

    def test_no_proxy_no_arguments(self) -> None:
        [build] = self.build(BuildLimits(InlineRunner())).builds
        self.assertEqual(build["buildargs"], {})

    def test_the_setting(self) -> None:
        """An http:// URL (no credentials, no path) or nothing; anything else is refused."""
        config = parse_config('[orchestrator]\nbuild_proxy = "http://10.0.0.1:3142"\n', Path("/"))
        self.assertEqual(config.orchestrator.build_proxy, "http://10.0.0.1:3142")
        self.assertEqual(parse_config("", Path("/")).orchestrator.build_proxy, "")
        for bad in (
            "https://10.0.0.1:3142",
            "10.0.0.1:3142",
            "http://user:secret@10.0.0.1:3142",
            "http://10.0.0.1:3142/debian",
            "http://10.0.0.1:3142 --x",
            "http://",
        ):
            with self.assertRaises(ConfigError, msg=bad) as caught:
                parse_config(f'[orchestrator]\nbuild_proxy = "{bad}"\n', Path("/"))
            self.assertIn("orchestrator.build_proxy", str(caught.exception))

"""The access table as data: which rule guards which path."""

from twisted.trial.unittest import SynchronousTestCase

from director.common.access import BadPath, is_allowed, normalized_path, rule_for


class AccessRuleTests(SynchronousTestCase):
    def test_healthz_public_everywhere(self) -> None:
        for target in ("manager", "orchestrator", "router"):
            self.assertIsNone(rule_for(target, "/healthz"))

    def test_manager_only_shell_server_is_protected(self) -> None:
        self.assertIsNone(rule_for("manager", "/api/v1/sites"))
        self.assertTrue(is_allowed("shell", "manager", "/shell-server/x"))
        self.assertFalse(is_allowed("manager", "manager", "/shell-server/x"))
        self.assertFalse(is_allowed("router", "manager", "/shell-server"))

    def test_orchestrator(self) -> None:
        self.assertTrue(is_allowed("manager", "orchestrator", "/v1/sites"))
        self.assertTrue(is_allowed("manager", "orchestrator", "/ws/shell-server/1/ssh-shell"))
        self.assertTrue(is_allowed("shell", "orchestrator", "/ws/shell-server/1/ssh-shell"))
        self.assertFalse(is_allowed("shell", "orchestrator", "/ws/terminal/1"))
        self.assertFalse(is_allowed("shell", "orchestrator", "/v1/sites"))
        self.assertFalse(is_allowed("shell", "orchestrator", "/ws/shell-serverX"))
        self.assertFalse(is_allowed("router", "orchestrator", "/v1/sites"))

    def test_router(self) -> None:
        self.assertTrue(is_allowed("manager", "router", "/v1/domains"))
        for caller in ("shell", "orchestrator", "router"):
            self.assertFalse(is_allowed(caller, "router", "/v1/domains"))

    def test_ambiguous_paths_refused(self) -> None:
        """Dot segments and encoded slashes cannot smuggle a path past a prefix rule."""
        for path in (
            "/ws/shell-server/../v1/sites",
            "/ws/shell-server/%2e%2e/v1",
            "/ws/shell-server%2F..%2Fv1",
            "relative",
            "/a\\b",
        ):
            with self.assertRaises(BadPath):
                normalized_path(path)
        self.assertEqual(normalized_path("/v1/sites?x=/../y"), "/v1/sites")

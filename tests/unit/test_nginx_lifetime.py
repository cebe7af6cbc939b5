"""nginx outlives the daemon: the pid-file helper, `director stop`, and the systemd units."""

from __future__ import annotations

import configparser
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from director.cli import build_parser, main
from director.common import pidfiles

ROOT = Path(__file__).resolve().parents[2]


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(ROOT / "etc" / "systemd" / name)
    return parser


def test_running_pid_needs_the_marker_in_the_command_line(tmp_path: Path) -> None:
    """A pid file names a process only if that process still runs the same server."""
    pid_file = tmp_path / "x.pid"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "marker-x"])
    try:
        pid_file.write_text(f"{sleeper.pid}\n")
        deadline = time.monotonic() + 10  # until the child has exec'd
        while "marker-x" not in pidfiles.command_line(sleeper.pid):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert pidfiles.running_pid(pid_file, "marker-x") == sleeper.pid
        assert pidfiles.running_pid(pid_file, "marker-y") is None  # stale: someone else's
        assert pidfiles.stop_pid_blocking(sleeper.pid, 15, 10)
        sleeper.wait(10)
        assert pidfiles.running_pid(pid_file, "marker-x") is None
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
    pid_file.write_text("not a number")
    assert pidfiles.running_pid(pid_file, "marker-x") is None
    assert pidfiles.running_pid(tmp_path / "missing.pid", "marker-x") is None


def test_director_stop_with_nothing_running(tmp_path: Path, capsys: object) -> None:
    """`director stop` on a config with nothing running stops nothing and succeeds."""
    config = tmp_path / "director.toml"
    state = tmp_path / "var"
    assert main(["init", "--config", str(config), "--state-dir", str(state)]) == 0
    assert main(["stop", "--config", str(config), "--timeout", "1"]) == 0


def test_daemon_units_leave_nginx_to_its_own_unit() -> None:
    """The daemon units kill only the daemon (nginx survives a crash) and want nginx's units."""
    for name, instances in (
        ("director.service", ("orchestrator", "router")),
        ("director-orchestrator.service", ("orchestrator",)),
        ("director-router.service", ("router",)),
    ):
        unit = _unit(name)
        assert unit["Service"]["KillMode"] == "process", name
        # nginx is its own unit's: the daemon never starts or stops it (a restart of this
        # unit leaves it serving), and nothing binds nginx's unit to this one
        assert unit["Service"]["Environment"] == "DIRECTOR_NGINX=supervised", name
        for instance in instances:
            assert f"director-nginx@{instance}.service" in unit["Unit"]["Wants"].split()
            assert f"director-nginx@{instance}.service" in unit["Unit"]["After"].split()
            for binding in ("Requires", "Requisite", "BindsTo", "PartOf"):
                assert "director-nginx" not in unit["Unit"].get(binding, ""), (name, binding)
    nginx = _unit("director-nginx@.service")
    for binding in ("Requires", "Requisite", "BindsTo", "PartOf"):
        assert "director" not in nginx["Unit"].get(binding, ""), binding


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """
    Every unit passes `systemd-analyze verify` with no complaint at all (an unknown key is
    only a warning there, so the output must be empty too), its paths pointed at this
    checkout's virtualenv.
    """
    here = str(Path(sys.executable).parent)
    for unit in sorted((ROOT / "etc" / "systemd").glob("*.service")):
        text = unit.read_text().replace("/opt/director/.venv/bin", here)
        text = text.replace("/opt/director", str(ROOT))
        names = [unit.name]
        if unit.name.endswith("@.service"):
            names = [unit.name.replace("@", f"@{i}") for i in ("orchestrator", "router")]
        for name in names:
            (tmp_path / name).write_text(text)
    units = sorted(p.name for p in tmp_path.iterdir())
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(f"./{u}" for u in units)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, ""), units


def test_nginx_unit_runs_a_real_command() -> None:
    """The nginx unit's ExecStart is a `director nginx run` the CLI accepts, graceful stop."""
    unit = _unit("director-nginx@.service")
    argv = shlex.split(unit["Service"]["ExecStart"].replace("%i", "router"))
    assert os.path.basename(argv[0]) == "director"
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.nginx_command, args.instance) == ("nginx", "run", "router")
    assert unit["Service"]["KillSignal"] == "SIGQUIT"


def test_logs_past_the_limit_are_rotated(tmp_path: Path) -> None:
    """Logs past the limit move to .1, older ones up, the last one kept is dropped."""
    from director.common.nginx import rotate_files

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "access.log").write_bytes(b"a" * 200)
    (logs / "error.log").write_bytes(b"e" * 10)
    (logs / "other.txt").write_bytes(b"x" * 500)
    assert rotate_files(logs, 100, 2) == ["access.log"]
    assert (logs / "access.log.1").read_bytes() == b"a" * 200
    assert not (logs / "access.log").exists()
    for letter in (b"b", b"c", b"d"):
        (logs / "access.log").write_bytes(letter * 200)
        assert rotate_files(logs, 100, 2) == ["access.log"]
    assert (logs / "access.log.1").read_bytes() == b"d" * 200
    assert (logs / "access.log.2").read_bytes() == b"c" * 200
    assert not (logs / "access.log.3").exists()
    assert (logs / "error.log").read_bytes() == b"e" * 10  # under the limit
    assert (logs / "other.txt").exists()
    assert rotate_files(tmp_path / "missing", 100, 2) == []

"""Smoke tests: every fixture gives a real, working service, and stop() really stops it."""

from __future__ import annotations

import json
import os
import socket
import ssl
import struct
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pymysql
import pytest
from services import (
    DockerSwarm,
    MariaDBServer,
    NginxConfigError,
    PebbleServer,
    PostgresServer,
    RedisServer,
    Services,
    pid_alive,
)


def redis_command(sock: socket.socket, *args: str) -> bytes:
    """Send one RESP command and return the raw reply line(s)."""
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    sock.sendall(payload)
    reply = sock.recv(4096)
    if reply.startswith(b"$") and reply.count(b"\r\n") < 2:
        reply += sock.recv(4096)
    return reply


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def dns_query_a(server: str, name: str) -> list[str]:
    """A minimal DNS A query over UDP; returns the IPv4 answers."""
    host, port = server.rsplit(":", 1)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    query = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(query, (host, int(port)))
        reply = sock.recv(4096)
    ancount = struct.unpack(">H", reply[6:8])[0]
    offset = 12 + len(qname) + 4
    answers = []
    for _ in range(ancount):
        if reply[offset] & 0xC0 == 0xC0:
            offset += 2
        else:
            while reply[offset]:
                offset += reply[offset] + 1
            offset += 1
        rtype, _cls, _ttl, rdlen = struct.unpack(">HHIH", reply[offset : offset + 10])
        offset += 10
        if rtype == 1 and rdlen == 4:
            answers.append(socket.inet_ntoa(reply[offset : offset + 4]))
        offset += rdlen
    return answers


def test_redis_ping_set_get(redis_server: RedisServer) -> None:
    with socket.create_connection((redis_server.host, redis_server.port), timeout=5) as sock:
        assert redis_command(sock, "PING") == b"+PONG\r\n"
        assert redis_command(sock, "SET", "director:smoke", "hello") == b"+OK\r\n"
        assert redis_command(sock, "GET", "director:smoke") == b"$5\r\nhello\r\n"
    assert (redis_server.base_dir / "pids" / "redis.pid").read_text().strip() == str(
        redis_server.pid
    )


def test_postgres_select_over_tcp_with_password(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.dsn(), connect_timeout=5) as conn:
        row = conn.execute("select 1").fetchone()
        assert row == (1,)
        addr = conn.execute("select inet_server_addr()::text").fetchone()
        assert addr is not None and addr[0].startswith("127.0.0.1")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres_server.dsn(password="wrong"), connect_timeout=5).close()
    assert postgres_server.socket_dir.is_dir()


def test_mariadb_select_over_tcp(mariadb_server: MariaDBServer) -> None:
    conn = pymysql.connect(
        host=mariadb_server.host,
        port=mariadb_server.port,
        user=mariadb_server.admin_user,
        password=mariadb_server.admin_password,
        connect_timeout=5,
    )
    try:
        with conn.cursor() as cur:
            cur.execute("select 1")
            assert cur.fetchone() == (1,)
            cur.execute("create database director_smoke")
            cur.execute("drop database director_smoke")
    finally:
        conn.close()
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(
            host=mariadb_server.host,
            port=mariadb_server.port,
            user=mariadb_server.admin_user,
            password="wrong",
            connect_timeout=5,
        ).close()


def test_pebble_directory_and_fake_dns(pebble_server: PebbleServer) -> None:
    context = ssl.create_default_context(cafile=str(pebble_server.ca_cert_path))
    url = pebble_server.directory_url
    with urllib.request.urlopen(url, context=context, timeout=5) as resp:
        directory = json.loads(resp.read())
    assert "newOrder" in directory
    assert directory["newOrder"].startswith("https://127.0.0.1:")
    assert pebble_server.issuing_root_pem().startswith("-----BEGIN CERTIFICATE-----")
    # pebble resolves every name through challtestsrv, which answers 127.0.0.1
    assert dns_query_a(pebble_server.dns_server, "site1.example.test") == ["127.0.0.1"]
    assert pebble_server.http_port > 0


def test_nginx_serves_reloads_and_rejects_broken_config(services: Services) -> None:
    nginx = services.nginx(name="nginx-smoke")
    try:
        (nginx.root_dir / "index.html").write_text("version one\n")
        assert http_get(nginx.url + "/") == (200, "version one\n")

        # a config change (new root + a new location) is served after reload
        new_root = nginx.dir / "www2"
        new_root.mkdir()
        new_root.chmod(0o755)
        (new_root / "index.html").write_text("version two\n")
        conf_v2 = nginx.conf_text.replace("root @ROOT@;", f"root {new_root};").replace(
            "location / {", "location = /v { return 200 'v2'; }\n        location / {"
        )
        nginx.write_config(conf_v2)
        assert nginx.test_config()[0]
        master = nginx.pid
        workers = nginx.worker_pids()
        assert workers
        nginx.reload()  # waits until the old workers are gone
        assert not workers & nginx.worker_pids()
        for _ in range(20):
            assert http_get(nginx.url + "/") == (200, "version two\n")
            assert http_get(nginx.url + "/v") == (200, "v2")
        assert nginx.pid == master and master is not None and pid_alive(master)

        # a broken config is refused and the running config keeps serving
        (nginx.conf_d / "broken.conf").write_text("server { listen 127.0.0.1:1; bogus_directive; }")
        ok, output = nginx.test_config()
        assert not ok and "bogus_directive" in output
        with pytest.raises(NginxConfigError):
            nginx.reload()
        time.sleep(0.3)
        assert http_get(nginx.url + "/") == (200, "version two\n")
        assert pid_alive(master)
    finally:
        services.stop(nginx)


def test_docker_swarm_active(docker_swarm: DockerSwarm) -> None:
    assert docker_swarm.node_state == "active"
    assert docker_swarm.node_id


def test_stop_leaves_no_process(service_dir: Path) -> None:
    base = service_dir / "stop-check"
    with Services(base) as services:
        started = [
            services.redis(),
            services.postgres(),
            services.mariadb(),
            services.pebble(),
            services.nginx(),
        ]
        pids: dict[str, int] = {}
        for service in started:
            assert service.pids, f"{service.name} recorded no pid"
            for label, pid in service.pids.items():
                assert (base / "pids" / f"{label}.pid").read_text().strip() == str(pid)
                assert pid_alive(pid), f"{label} ({pid}) is not running"
                pids[label] = pid
        assert set(pids) >= {"redis", "postgres", "mariadb", "pebble", "pebble-challtestsrv"}
        for service in started:
            service.stop()
            service.stop()  # idempotent
    for label, pid in pids.items():
        assert not pid_alive(pid), f"{label} ({pid}) still running after stop()"
    assert not list((base / "pids").glob("*.pid"))


def test_services_stops_earlier_services_when_a_start_fails(service_dir: Path) -> None:
    base = service_dir / "fail-midway"
    redis_pid = None
    with pytest.raises(NginxConfigError):
        with Services(base) as services:
            redis = services.redis()
            redis_pid = redis.pid
            services.nginx(conf_text="@MAIN@\nevents {}\nhttp { this is not nginx }\n")
    assert redis_pid is not None and not pid_alive(redis_pid)
    assert not os.path.exists(base / "pids" / "redis.pid")


def test_databases_listen_on_docker_bridge(
    docker_swarm: DockerSwarm, postgres_server: PostgresServer, mariadb_server: MariaDBServer
) -> None:
    """Containers reach the databases at 172.17.0.1 (docker0 must exist before they start)."""
    bridge = docker_swarm.bridge_ip
    assert bridge is not None, "docker0 with 172.17.0.1 is missing: dockerd runs with no bridge?"
    assert postgres_server.bridge_host == bridge
    assert mariadb_server.bridge_host == bridge
    # Only a TCP check for PostgreSQL: from the host itself, docker's MASQUERADE rule
    # (-s 172.17.0.0/16 ! -o docker0) rewrites the source to the host's eth0 address,
    # which pg_hba does not list. Containers arrive as 172.17.0.x, which it does.
    with socket.create_connection((bridge, postgres_server.port), timeout=5):
        pass
    # Likewise a TCP check for MariaDB: its administrator may log in from 127.0.0.1 only.
    with socket.create_connection((bridge, mariadb_server.port), timeout=5):
        pass

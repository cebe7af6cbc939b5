"""
The sections of Director's configuration, one frozen dataclass per TOML table: every setting
with its default, its check and a comment saying what it does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from director.common.config_checks import (
    _absolute_path,
    _bcrypt_rounds,
    _boolean,
    _check,
    _check_docker_tls,
    _count,
    _database_url,
    _docker_url,
    _domain,
    _domains,
    _email,
    _host,
    _host_ports,
    _ip,
    _ipv4_networks,
    _long_text,
    _mail_address,
    _network_name,
    _networks,
    _nginx_size,
    _node_name,
    _optional,
    _optional_host,
    _optional_host_port,
    _optional_line,
    _optional_port,
    _optional_proxy,
    _optional_role,
    _optional_url,
    _orchestrator_name,
    _port,
    _positive,
    _redis_url,
    _regex,
    _restic_repository,
    _router_urls,
    _site_names,
    _subnet,
    _text,
    _tls_file,
    _url,
    _url_format_table,
    _whole,
    _zero_or_one,
)


@dataclass(frozen=True)
class DirectorSection:
    """Settings shared by every component."""

    state_dir: Path = Path("var")
    sites_domain: str = field(default="sites.localhost", metadata=_check(_domain))
    # Each purpose's site URL (a [director.url_formats] table, purpose = "format"):
    # "{name}.<domain>" (a host per site) or "<host>/{name}/" (a path of one shared host).
    # A purpose not listed: "{name}.<sites_domain>". See docs/router.md, "URL formats".
    url_formats: Mapping[str, str] = field(default_factory=dict, metadata=_check(_url_format_table))


@dataclass(frozen=True)
class AuthSection:
    """How components prove who they are to each other (signed requests)."""

    # <component>.key (private, 0600) for the components run here, <component>.pub for all.
    keys_dir: Path = Path("var/keys")
    # How far a signed request's timestamp may be from this machine's clock, in seconds.
    max_clock_skew: float = field(default=60.0, metadata=_check(_positive))


@dataclass(frozen=True)
class ManagerSection:
    host: str = field(default="127.0.0.1", metadata=_check(_host))
    port: int = field(default=8000, metadata=_check(_port))
    url: str = field(default="http://127.0.0.1:8000", metadata=_check(_url))
    # SQLAlchemy URL of the manager's database; empty: SQLite at <state_dir>/director.db.
    database_url: str = field(default="", metadata=_check(_database_url))
    # redis://host:port for event fan-out between several managers; empty: in-process.
    redis_url: str = field(default="", metadata=_check(_redis_url))
    # Dashboard sessions last this many hours.
    session_hours: float = field(default=12.0, metadata=_check(_positive))
    # Sign-in through an OAuth2 / OpenID Connect provider (authorization code + PKCE); empty
    # oidc_authorize_url: local accounts only. The callback is <url>/login/oidc/callback, or
    # the dashboard host's over HTTPS once it has a certificate (service.oidc_callback).
    oidc_name: str = "School account"
    oidc_authorize_url: str = field(default="", metadata=_check(_optional_url))
    oidc_token_url: str = field(default="", metadata=_check(_optional_url))
    oidc_userinfo_url: str = field(default="", metadata=_check(_optional_url))
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    oidc_username_claim: str = "preferred_username"
    # The provider's issuer identifier; identities are linked by (issuer, subject). Empty:
    # the origin (scheme://host[:port]) of oidc_authorize_url.
    oidc_issuer: str = ""
    # Role of accounts created at their first sign-in; empty: only linked accounts.
    oidc_new_user_role: str = field(default="", metadata=_check(_optional_role))
    # E-mail domains whose (verified) addresses may get a new account; empty: any domain.
    oidc_allowed_domains: str = field(default="", metadata=_check(_domains))
    # The dashboard's own host name: never accepted as a site's custom domain.
    dashboard_host: str = field(default="director.localhost", metadata=_check(_domain))
    # Proxies (addresses or networks) whose X-Forwarded-For and X-Forwarded-Proto are
    # believed: the routers' front nginx as the manager sees them connect. The default is
    # loopback, the router of a single machine (the manager listens there only); empty:
    # none, the connection's peer is the client.
    trusted_proxies: str = field(default="127.0.0.1, ::1", metadata=_check(_networks))
    # Creating an API token needs a sign-in at most this many minutes old, or the password.
    reauth_minutes: float = field(default=10.0, metadata=_check(_positive))
    # SMTP server for notifications (site requests); empty host: no mail is sent.
    smtp_host: str = field(default="", metadata=_check(_optional_host))
    smtp_port: int = field(default=25, metadata=_check(_port))
    mail_from: str = field(default="director@localhost", metadata=_check(_mail_address))
    # Changes one user may make: a burst of write_burst, then write_rate per second.
    write_burst: float = field(default=60.0, metadata=_check(_positive))
    write_rate: float = field(default=2.0, metadata=_check(_positive))
    # Seconds between comparisons of the database with what the components report.
    reconcile_interval: float = field(default=300.0, metadata=_check(_positive))
    # Seconds a manager holds an operation without renewing before another may take it over.
    operation_lease: float = field(default=60.0, metadata=_check(_positive))
    # With several managers (redis_url set): seconds the reconcile's leader holds its Redis
    # lease without renewing before another manager takes over the reconcile.
    leader_lease: float = field(default=30.0, metadata=_check(_positive))
    # bcrypt work factor for passwords (each check costs about 2^rounds * 0.05 ms).
    bcrypt_rounds: int = field(default=12, metadata=_check(_bcrypt_rounds))
    # What one user may take (administrators are not limited). Sites a student is a member of:
    max_sites_per_student: int = field(default=10, metadata=_check(_count))
    # Personal sites a student or teacher is a member of:
    max_personal_sites_per_user: int = field(default=1, metadata=_check(_count))
    # Dynamic sites (not disabled) a student or teacher is a member of:
    max_dynamic_sites_per_user: int = field(default=3, metadata=_check(_count))
    # Custom domains on one site:
    max_domains_per_site: int = field(default=10, metadata=_check(_count))
    # Databases on one site: 1, or 0 for "only administrators add databases".
    max_databases_per_site: int = field(default=1, metadata=_check(_zero_or_one))
    # Whom members of a disabled site are told to contact.
    admin_contact: str = field(default="the administrators", metadata=_check(_text))
    # Seconds a request on a site still being created waits for the creation to end.
    creation_wait: float = field(default=30.0, metadata=_check(_positive))
    # The school's site-name rules for everyone but administrators (personal sites, named
    # after their owner, are exempt): names nobody else may take (comma-separated; on top
    # of the built-in www, admin, api, ...), and a regular expression every name must match
    # in full, with the sentence that explains it to a student.
    reserved_site_names: str = field(default="", metadata=_check(_site_names))
    site_name_pattern: str = field(default="", metadata=_check(_regex))
    site_name_rule: str = field(default="", metadata=_check(_optional_line))
    # The agreement students tick when they create or request a site (empty: no box).
    student_agreement: str = field(default="", metadata=_check(_long_text))
    # Seconds between two copies of the sites' disk use from the orchestrator (shown on the
    # site's page and in the API as disk_usage_bytes; also a few seconds after each upload).
    disk_poll_interval: float = field(default=60.0, metadata=_check(_positive))
    # Scheduled tasks: how many one site may have (administrators are not limited), the
    # longest time limit a task may have and the one it gets when none is given (seconds),
    # how many runs of each task are kept, and how much of a run's output (KiB).
    max_tasks_per_site: int = field(default=10, metadata=_check(_count))
    task_max_timeout: int = field(default=3600, metadata=_check(_whole(1, 86400)))
    task_default_timeout: int = field(default=300, metadata=_check(_whole(1, 86400)))
    task_runs_kept: int = field(default=20, metadata=_check(_whole(1, 1000)))
    task_output_kb: int = field(default=64, metadata=_check(_whole(1, 16384)))


@dataclass(frozen=True)
class OrchestratorSection:
    host: str = field(default="127.0.0.1", metadata=_check(_host))
    port: int = field(default=8100, metadata=_check(_port))
    url: str = field(default="http://127.0.0.1:8100", metadata=_check(_url))
    nginx_port: int = field(default=8180, metadata=_check(_port))
    # The manager drives a pool of orchestrators (`director orchestrator add`); this one, the
    # configured url, is registered under this name when the manager starts, and sites that
    # have no orchestrator yet are placed on it.
    name: str = field(default="main", metadata=_check(_orchestrator_name))
    # The host:port routers forward this orchestrator's sites to; empty: the local nginx
    # (127.0.0.1:<nginx_port>), and the routers keep their own default for its sites.
    public_nginx: str = field(default="", metadata=_check(_optional_host_port))
    # The Docker network site containers join (a swarm-scoped bridge the host can reach).
    # On a swarm of several nodes each node's orchestrator has a subnet of its own.
    sites_network: str = field(default="director-sites", metadata=_check(_network_name))
    sites_subnet: str = field(default="172.29.0.0/16", metadata=_check(_subnet))
    # The Docker engine this orchestrator uses for everything on its node (containers,
    # terminals, logs, images, builds, events): unix:///path or tcp://host:port; "": the
    # default socket. See docs/orchestrator.md, "Several nodes".
    docker_url: str = field(default="", metadata=_check(_docker_url))
    # The engine services are created, changed and removed through: a swarm manager (a
    # worker node cannot); "": docker_url.
    swarm_manager_url: str = field(default="", metadata=_check(_docker_url))
    # The swarm node (its hostname) this orchestrator's sites run on; every site service is
    # constrained to it and labelled with it, and the orchestrator only sees services so
    # labelled. "": the node of docker_url's engine.
    node: str = field(default="", metadata=_check(_node_name))
    # TLS for tcp:// engines (docker_url, swarm_manager_url; dockerd --tlsverify): the CA that
    # signed the engines' certificates, and this orchestrator's client certificate and key
    # (PEM files, absolute paths). All three or none; see docs/deploy.md, "Docker over TCP".
    docker_tls_ca: str = field(default="", metadata=_check(_tls_file))
    docker_tls_cert: str = field(default="", metadata=_check(_tls_file))
    docker_tls_key: str = field(default="", metadata=_check(_tls_file))
    # The largest file the files API sends (downloads are streamed, so this is policy, not
    # memory: the original Director's 100 MB).
    max_download_mb: int = field(default=100, metadata=_check(_positive))
    # How long a dynamic site's new process (restart, image or settings change) may take to
    # accept connections on $PORT before the change fails and the old process keeps serving.
    ready_timeout: int = field(default=60, metadata=_check(_positive))
    # Site image builds (extra packages): how many run at once (each in a thread of its
    # own, apart from other Docker calls), and the time and memory one may take.
    max_builds: int = field(default=2, metadata=_check(_positive))
    build_timeout: int = field(default=900, metadata=_check(_positive))
    build_memory_mb: int = field(default=1024, metadata=_check(_positive))
    # An HTTP proxy image builds reach the Debian mirror through (the http_proxy of their
    # RUN steps, kept out of the image), for a node with no route out; "": none, direct.
    build_proxy: str = field(default="", metadata=_check(_optional_proxy))
    # Each site's disk quota in MB unless an administrator set its own (limits.disk_quota_mb);
    # 0: no quota. Writes through the API, the editor and SFTP that would pass it are refused.
    disk_quota_mb: int = field(default=1024, metadata=_check(_count))
    # Seconds between two measurements of every site's disk use (in the background).
    disk_interval: float = field(default=600.0, metadata=_check(_positive))
    # Keep the sites firewall (iptables, as root): sites reach neither each other, nor this
    # machine (except the database ports they are granted), nor the networks below.
    sites_firewall: bool = field(default=True, metadata=_check(_boolean))
    # Networks sites never reach (comma-separated); link-local holds clouds' metadata.
    sites_blocked: str = field(default="169.254.0.0/16", metadata=_check(_ipv4_networks))
    # Run a PostgreSQL and a MariaDB for site databases under <state_dir>/databases/ (started
    # and stopped with Director; `director init` registers them as database hosts). false:
    # only the servers added with `director database-host add` (the school's own).
    bundled_databases: bool = True
    postgres_port: int = field(default=8432, metadata=_check(_port))
    mysql_port: int = field(default=8306, metadata=_check(_port))
    # The Docker bridge address the bundled servers also listen on: site containers reach
    # them there (docker0's address; dockerd must be running before Director starts).
    databases_bridge_host: str = field(
        default="172.17.0.1", metadata=_check(lambda key, value: _ip(key, value))
    )

    def __post_init__(self) -> None:
        _check_docker_tls(self)


@dataclass(frozen=True)
class RouterSection:
    host: str = field(default="127.0.0.1", metadata=_check(_host))
    port: int = field(default=8200, metadata=_check(_port))
    url: str = field(default="http://127.0.0.1:8200", metadata=_check(_url))
    # Every router the manager drives, as "url, url" or "name=url, name=url"; "" means url alone.
    # Each change goes to all of them (they share certificates through shared_dir).
    urls: str = field(default="", metadata=_check(_optional(_router_urls)))
    http_port: int = field(default=80, metadata=_check(_port))
    https_port: int = field(default=443, metadata=_check(_port))
    # The address the front nginx listens on; empty: every IPv4 (and IPv6) address.
    public_host: str = field(default="", metadata=_check(_optional(_ip)))
    # The orchestrators' nginx; empty: the local one (127.0.0.1:<orchestrator.nginx_port>).
    upstreams: str = field(default="", metadata=_check(_optional(_host_ports)))
    # Request body limit for sites that have none of their own.
    max_body_size: str = field(default="2m", metadata=_check(_nginx_size))
    # A certificate (and key) for *.<sites_domain>; empty: site hosts are served over HTTP only.
    sites_certificate: str = field(default="", metadata=_check(_optional(_absolute_path)))
    sites_certificate_key: str = field(default="", metadata=_check(_optional(_absolute_path)))
    # ACME account and certificates, shared by every router; empty: <state_dir>/router/shared.
    shared_dir: str = field(default="", metadata=_check(_optional(_absolute_path)))
    # The ACME directory; empty turns ACME off (custom domains are then served over HTTP).
    acme_directory_url: str = field(default="", metadata=_check(_optional(_url)))
    acme_email: str = field(default="", metadata=_check(_optional(_email)))
    # CA certificates to trust for a private ACME server; empty: the system's.
    acme_ca_bundle: str = field(default="", metadata=_check(_optional(_absolute_path)))
    # Seconds allowed for each request to the ACME server.
    acme_timeout: float = field(default=30.0, metadata=_check(_positive))
    # A failed issuance is retried after this many seconds, doubling up to acme_retry_max.
    acme_retry_initial: float = field(default=300.0, metadata=_check(_positive))
    acme_retry_max: float = field(default=21600.0, metadata=_check(_positive))
    # Renew this long before expiry (or at two thirds of the lifetime, if that is later).
    renew_before_days: float = field(default=30.0, metadata=_check(_positive))
    # The dashboard host (manager.dashboard_host) is served by the front nginx and sent to
    # these managers (host:port; with failover); empty: the host:port of manager.url.
    manager_upstreams: str = field(default="", metadata=_check(_optional(_host_ports)))
    # A certificate (and key) for the dashboard host; empty: ACME orders one (when ACME is
    # configured and the host is not under .localhost), else the dashboard is plain HTTP.
    dashboard_certificate: str = field(default="", metadata=_check(_optional(_absolute_path)))
    dashboard_certificate_key: str = field(default="", metadata=_check(_optional(_absolute_path)))
    # Request body limit on the dashboard host (file uploads go through it).
    dashboard_max_body_size: str = field(default="128m", metadata=_check(_nginx_size))


@dataclass(frozen=True)
class ShellSection:
    """The SSH server: where it listens, and how hard it makes guessing and idling."""

    host: str = field(default="0.0.0.0", metadata=_check(_host))  # noqa: S104 (SSH is public)
    port: int = field(default=2322, metadata=_check(_port))
    # The host name (and port) users connect to, shown on site pages and in the sites' API
    # representation (sftp_url, git_url); empty: manager.dashboard_host. public_port 0: port.
    public_host: str = field(default="", metadata=_check(_optional_host))
    public_port: int = field(default=0, metadata=_check(_optional_port))
    # ssh_host_ed25519_key and ssh_host_rsa_key, written by `director init`.
    host_keys_dir: Path = Path("var/keys")
    # Seconds a connection may take to log in (from its first byte) before it is closed.
    login_grace_time: float = field(default=60.0, metadata=_check(_positive))
    # Failed logins allowed on one connection before it is closed.
    max_auth_tries: int = field(default=6, metadata=_check(_positive))
    # Seconds before a wrong password is answered.
    failure_delay: float = field(default=2.0, metadata=_check(_positive))
    # Failed logins within failure_window after which a user name from one address, a source
    # address, or a user name from all addresses together is refused until its oldest failure
    # is older than the window. The last is kept above max_failures_per_address, so one
    # address can never lock a user out everywhere.
    max_failures_per_user: int = field(default=10, metadata=_check(_positive))
    max_failures_per_address: int = field(default=50, metadata=_check(_positive))
    max_failures_per_account: int = field(default=200, metadata=_check(_positive))
    failure_window: float = field(default=900.0, metadata=_check(_positive))
    # Connections from one address that may be logging in at the same time.
    max_unauthenticated_per_address: int = field(default=10, metadata=_check(_positive))
    # Seconds without input or output after which a session (or the menu) is closed.
    idle_timeout: float = field(default=3600.0, metadata=_check(_positive))


@dataclass(frozen=True)
class BackupSection:
    """Backups with restic: where the repository is, how often, and what is kept."""

    # Back up on the schedule below (on demand backups work either way).
    enabled: bool = field(default=True, metadata=_check(_boolean))
    # Any restic repository; empty: the local directory <state_dir>/backups/restic.
    repository: str = field(default="", metadata=_check(_restic_repository))
    # The repository's password (made, 0600, on first use); empty:
    # <state_dir>/secrets/restic-password. Keep a copy elsewhere: without it nothing restores.
    password_file: str = field(default="", metadata=_check(_optional(_absolute_path)))
    # KEY=VALUE lines (0600) for the backend's credentials (AWS_ACCESS_KEY_ID, ...); empty: none.
    environment_file: str = field(default="", metadata=_check(_optional(_absolute_path)))
    # Hours between scheduled backups of everything.
    interval_hours: float = field(default=24.0, metadata=_check(_positive))
    # Retention (restic forget --prune, per site): the last snapshot of each of so many days,
    # weeks and months.
    keep_daily: int = field(default=7, metadata=_check(_count))
    keep_weekly: int = field(default=4, metadata=_check(_count))
    keep_monthly: int = field(default=6, metadata=_check(_count))
    # Sites backed up at the same time.
    concurrency: int = field(default=2, metadata=_check(_positive))

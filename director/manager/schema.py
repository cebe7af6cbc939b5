"""
The manager's tables (SQLAlchemy Core). Changes to this file need an Alembic migration in
director/manager/migrations/versions/ (tests check that the migrations produce this schema).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(32), nullable=False, unique=True),
    Column("full_name", String(200), nullable=False, default=""),
    Column("email", String(254), nullable=False, default=""),
    Column("password_hash", String(200), nullable=True),
    Column("role", String(16), nullable=False),  # student | teacher | admin
    Column("is_active", Boolean, nullable=False, default=True),
    Column("accepted_guidelines", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # An account for administrators' scripts: API tokens only (no password, SSH or sign-in).
    Column("is_service", Boolean, nullable=False, default=False, server_default=text("false")),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=True),  # null: never
)

# Identities at the OpenID Connect provider, linked to accounts by issuer and subject.
oidc_identities = Table(
    "oidc_identities",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("issuer", String(500), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("issuer", "subject", name="uq_oidc_identities_issuer_subject"),
)

ssh_keys = Table(
    "ssh_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("public_key", Text, nullable=False),
    Column("fingerprint", String(100), nullable=False),
    Column("comment", String(200), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("user_id", "fingerprint", name="uq_ssh_keys_user_fingerprint"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

images = Table(
    "images",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(128), nullable=False, unique=True),  # the Docker image reference
    Column("friendly_name", String(100), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("setup_command", Text, nullable=True),  # admin-written, run when building on it
    Column("is_default", Boolean, nullable=False, default=False),
    Column("logo", String(32), nullable=True),  # a curated icon name (manager/catalogue.py)
    # everyone | teachers | hidden (admins only)
    Column("visibility", String(16), nullable=False, server_default="everyone"),
    Column("run_template", Text, nullable=True),  # a dynamic site's first run.sh
)

# The images `director init` put into the catalogue by itself once they were built (Node.js,
# PHP): each is offered once, so an entry an administrator deleted is not added back.
catalogue_offers = Table(
    "catalogue_offers",
    metadata,
    Column("name", String(128), primary_key=True),  # the Docker image reference
    Column("offered_at", DateTime(timezone=True), nullable=False),
)

# The orchestrators sites run on (a pool): each site is placed on one of them.
orchestrators = Table(
    "orchestrators",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(32), nullable=False, unique=True),
    Column("url", String(500), nullable=False),  # its API base URL
    Column("nginx", String(300), nullable=False),  # "host:port" routers forward its sites to
    Column("state", String(16), nullable=False),  # active | draining (no new sites)
    Column("created_at", DateTime(timezone=True), nullable=False),
)

sites = Table(
    "sites",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(32), nullable=False, unique=True),
    Column("type", String(16), nullable=False),  # static | dynamic
    Column("purpose", String(16), nullable=False),  # personal | project | activity | other
    Column("availability", String(16), nullable=False),  # enabled | not-served | disabled
    Column("description", Text, nullable=False, default=""),
    Column("image", String(128), nullable=False),
    Column("image_tag", String(128), nullable=True),  # built custom image, when packages
    Column("packages", JSON, nullable=False, default=list),
    Column("cpus", Float, nullable=False),
    Column("memory_mb", Integer, nullable=False),
    Column("pids", Integer, nullable=False),
    Column("client_max_body_size", String(16), nullable=False),
    Column("admin_comments", Text, nullable=False, default=""),  # for administrators only
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The administrators' comment every member sees on the site's page (why it is disabled).
    Column("public_comment", Text, nullable=False, default="", server_default=""),
    # The site's own disk quota (MB) set by an administrator; null: the orchestrator's default.
    Column("disk_quota_mb", Integer, nullable=True),
    # The site's disk use and quota (bytes) as its orchestrator last reported them.
    Column("disk_usage_bytes", BigInteger, nullable=True),
    Column("disk_quota_bytes", BigInteger, nullable=True),
    # The orchestrator that runs the site (null only before the manager first started with
    # the pool: it places such sites on the configured orchestrator).
    Column("orchestrator_id", Integer, ForeignKey("orchestrators.id"), nullable=True),
    # Raw nginx directives an administrator added to the site's server block (nginx -t'd).
    Column("nginx_snippet", Text, nullable=True),
)

# Site ids are taken from here, never from the sites table: an id, once given, is never
# given again (SQLite would reuse the highest id of a deleted site), so a new site never
# sees an old site's operations, files or database.
site_ids = Table(
    "site_ids",
    metadata,
    Column("id", Integer, primary_key=True),
    sqlite_autoincrement=True,
)

site_members = Table(
    "site_members",
    metadata,
    Column("site_id", Integer, ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
)

# Notices from administrators shown at the top of every dashboard page until they expire.
banners = Table(
    "banners",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("message", Text, nullable=False),
    Column("level", String(16), nullable=False),  # info | warning
    Column("created_by", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),  # null: until removed
)

# People added to a site before they first signed in: attached when their account is made.
pending_members = Table(
    "pending_members",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("site_id", Integer, ForeignKey("sites.id", ondelete="CASCADE"), nullable=False),
    Column("username", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("site_id", "username", name="uq_pending_members_site_id_username"),
    Index("ix_pending_members_username", "username"),
)

domains = Table(
    "domains",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("site_id", Integer, ForeignKey("sites.id", ondelete="CASCADE"), nullable=False),
    # Unique across all sites, enforced by the database.
    Column("domain", String(253), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

database_hosts = Table(
    "database_hosts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),  # postgres | mysql
    Column("admin_host", String(253), nullable=False),
    Column("admin_port", Integer, nullable=False),
    Column("admin_user", String(100), nullable=False),
    Column("admin_password", String(256), nullable=False),
    Column("container_host", String(253), nullable=True),
    Column("container_port", Integer, nullable=True),
    UniqueConstraint("kind", "admin_host", "admin_port", name="uq_database_hosts_address"),
)

databases = Table(
    "databases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "site_id", Integer, ForeignKey("sites.id", ondelete="CASCADE"), nullable=False, unique=True
    ),
    Column("host_id", Integer, ForeignKey("database_hosts.id"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("username", String(64), nullable=False),
    Column("password", String(256), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

site_requests = Table(
    "site_requests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("requester_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("teacher_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(32), nullable=False),
    Column("activity", String(200), nullable=False),
    Column("description", Text, nullable=False, default=""),
    # pending-teacher | pending-admin | rejected | created
    Column("status", String(16), nullable=False),
    Column("site_id", Integer, ForeignKey("sites.id", ondelete="SET NULL"), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # From administrators: one the student and teacher see, one for administrators only.
    Column("public_comment", Text, nullable=False, default="", server_default=""),
    Column("admin_comment", Text, nullable=False, default="", server_default=""),
)

operations = Table(
    "operations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("site_id", Integer, nullable=True),  # kept after the site is deleted
    Column("site_name", String(32), nullable=False, default=""),
    Column("type", String(32), nullable=False),
    Column("status", String(16), nullable=False),  # pending | running | succeeded | failed
    Column("params", JSON, nullable=False, default=dict),
    Column("error", Text, nullable=True),
    Column("created_by", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("claimed_by", String(64), nullable=True),
    Column("lease_until", Float, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False, default=0.0),
    # At most one active operation per site, enforced by the database.
    Index(
        "uq_operations_active_site",
        "site_id",
        unique=True,
        sqlite_where=text("status IN ('pending', 'running')"),
        postgresql_where=text("status IN ('pending', 'running')"),
    ),
)

actions = Table(
    "actions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "operation_id", Integer, ForeignKey("operations.id", ondelete="CASCADE"), nullable=False
    ),
    Column("position", Integer, nullable=False),
    Column("name", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # pending | running | succeeded | failed
    Column("message", Text, nullable=False, default=""),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("operation_id", "position", name="uq_actions_operation_position"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("user_id", Integer, nullable=True),
    Column("username", String(32), nullable=False, default=""),
    Column("action", String(64), nullable=False),
    Column("target", String(200), nullable=False, default=""),
    Column("details", JSON, nullable=False, default=dict),
)

# Scheduled tasks: a command run in the site's container on a cron schedule (see
# director/manager/tasks.py). next_run_at is the reactor's clock (seconds since the epoch);
# a manager takes a due run by moving it forward with a conditional UPDATE.
tasks = Table(
    "tasks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("site_id", Integer, ForeignKey("sites.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(100), nullable=False, default=""),
    Column("schedule", String(100), nullable=False),
    Column("command", Text, nullable=False),
    Column("timeout", Integer, nullable=False),  # seconds
    Column("enabled", Boolean, nullable=False, default=True),
    Column("next_run_at", Float, nullable=False),
    Column("created_by", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_tasks_next_run_at", "next_run_at"),
)

# The runs of each task (the last manager.task_runs_kept are kept). A running run is leased
# like an operation (claimed_by, lease_until); at most one runs per task, enforced by the
# database: a run due while the previous one still runs is recorded as skipped.
task_runs = Table(
    "task_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("task_id", Integer, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Column("trigger", String(16), nullable=False),  # schedule | manual
    # running | succeeded | failed | timed_out | skipped | interrupted
    Column("status", String(16), nullable=False),
    Column("exit_code", Integer, nullable=True),
    Column("output", Text, nullable=False, default=""),
    Column("output_truncated", Boolean, nullable=False, default=False),
    Column("message", Text, nullable=False, default=""),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("claimed_by", String(64), nullable=True),
    Column("lease_until", Float, nullable=True),
    Index("ix_task_runs_task_id", "task_id"),
    Index(
        "uq_task_runs_running_task",
        "task_id",
        unique=True,
        sqlite_where=text("status = 'running'"),
        postgresql_where=text("status = 'running'"),
    ),
)

backup_runs = Table(
    "backup_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    # what was backed up: "site" (site_id, kept after the site is deleted) or "manager"
    Column("kind", String(16), nullable=False),
    Column("site_id", Integer, nullable=True),
    Column("site_name", String(32), nullable=False, default=""),
    Column("status", String(16), nullable=False),  # running | succeeded | failed
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("duration", Float, nullable=True),
    Column("snapshot", String(64), nullable=True),
    Column("bytes", BigInteger, nullable=True),
    Column("error", Text, nullable=True),
    Index("ix_backup_runs_site_started", "site_id", "started_at"),
)

"""
Scheduled tasks, without I/O: schedules (cron expressions, read by croniter), the input a
member sends, and the records of tasks and their runs. The scheduler that runs them is in
L{director.manager.tasks}.

Schedules are standard five-field cron expressions (minute hour day-of-month month
day-of-week) or one of @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually,
read in UTC (the time zone of the sites' containers).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

from director.manager.models import ValidationError, iso_utc

MACROS = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")
MAX_SCHEDULE = 100
MAX_COMMAND = 10000
MAX_NAME = 100
RUN_STATUSES = ("running", "succeeded", "failed", "timed_out", "skipped", "interrupted")


@dataclass(frozen=True)
class TaskSettings:
    """The manager.task_* settings."""

    max_per_site: int = 10
    max_timeout: int = 3600
    default_timeout: int = 300
    runs_kept: int = 20
    max_output: int = 64 * 1024


def validate_schedule(value: object) -> str:
    """A schedule as stored (fields separated by one space), or a ValidationError saying why."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_SCHEDULE:
        raise ValidationError(
            "schedule",
            'a cron schedule like "*/15 * * * *" (minute hour day month weekday) or @daily',
        )
    schedule = " ".join(value.split())
    if schedule.startswith("@"):
        if schedule.lower() not in MACROS:
            raise ValidationError("schedule", f"unknown shorthand; use one of {', '.join(MACROS)}")
        return schedule.lower()
    fields = schedule.split(" ")
    if len(fields) != 5:
        raise ValidationError(
            "schedule",
            f"expected 5 fields (minute hour day month weekday), got {len(fields)}",
        )
    try:
        croniter(schedule, datetime(2000, 1, 1, tzinfo=UTC))
    except (CroniterBadCronError, CroniterError, ValueError, KeyError, TypeError) as e:
        raise ValidationError("schedule", f"not a valid cron schedule ({e})") from None
    try:
        next_run(schedule, datetime(2000, 1, 1, tzinfo=UTC).timestamp())
    except ValidationError:
        raise ValidationError("schedule", "this schedule never comes round (no such day)") from None
    return schedule


def next_run(schedule: str, after: float) -> float:
    """The first time (seconds since the epoch) strictly after C{after} that C{schedule} names."""
    try:
        result = croniter(schedule, datetime.fromtimestamp(after, UTC)).get_next(float)
    except (CroniterBadDateError, CroniterError, ValueError, OverflowError) as e:
        raise ValidationError("schedule", f"no next run ({e})") from None
    return float(result)


def validate_timeout(value: object, settings: TaskSettings) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value != int(value)
        or not 1 <= value <= settings.max_timeout
    ):
        raise ValidationError(
            "timeout", f"a whole number of seconds from 1 to {settings.max_timeout}"
        )
    return int(value)


def _encodable(value: str) -> bool:
    """Not holding a lone surrogate (JSON allows one; UTF-8, and so the database, do not)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# What "blank" means where the OpenAPI document says "not blank": ASCII white space, the one
# set JSON Schema's regex engines and Python agree on (str.strip() also takes \x1c-\x1f).
ASCII_SPACE = " \t\n\v\f\r"


def validate_command(value: object) -> str:
    if (
        not isinstance(value, str)
        or not value.strip(ASCII_SPACE)
        or len(value) > MAX_COMMAND
        or "\x00" in value
        or not _encodable(value)
    ):
        raise ValidationError(
            "command", f"a shell command of at most {MAX_COMMAND} characters (run with sh -c)"
        )
    return value


def validate_name(value: object) -> str:
    if (
        not isinstance(value, str)
        or len(value) > MAX_NAME
        or "\x00" in value
        or not _encodable(value)
    ):
        raise ValidationError("name", f"text of at most {MAX_NAME} characters")
    return value.strip()


def validate_enabled(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValidationError("enabled", "true or false")
    return value


@dataclass(frozen=True)
class TaskRun:
    id: int
    task_id: int
    trigger: str  # schedule | manual
    status: str  # one of RUN_STATUSES
    exit_code: int | None
    output: str
    output_truncated: bool
    message: str
    started_at: datetime
    finished_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        duration = None
        if self.finished_at is not None:
            duration = round((self.finished_at - self.started_at).total_seconds(), 3)
        return {
            "id": self.id,
            "task_id": self.task_id,
            "trigger": self.trigger,
            "status": self.status,
            "exit_code": self.exit_code,
            "output": self.output,
            "output_truncated": self.output_truncated,
            "message": self.message,
            "started_at": iso_utc(self.started_at),
            "finished_at": iso_utc(self.finished_at),
            "duration": duration,
        }


@dataclass(frozen=True)
class Task:
    id: int
    site_id: int
    name: str
    schedule: str
    command: str
    timeout: int
    enabled: bool
    next_run_at: float
    created_at: datetime | None = None
    last_run: TaskRun | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "schedule": self.schedule,
            "command": self.command,
            "timeout": self.timeout,
            "enabled": self.enabled,
            "next_run_at": datetime.fromtimestamp(self.next_run_at, UTC).isoformat()
            if self.enabled
            else None,
            "created_at": iso_utc(self.created_at),
            "last_run": self.last_run.to_json() if self.last_run is not None else None,
        }


def describe_result(result: dict[str, Any], timeout: int) -> tuple[str, int | None, str]:
    """The status, exit code and message of a run from the orchestrator's answer."""
    code = result.get("exit_code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    if result.get("timed_out"):
        return "timed_out", code, f"stopped: it ran longer than its time limit of {timeout} s"
    if code == 0:
        return "succeeded", 0, "exit status 0"
    if code is None:
        return "failed", None, "the command's exit status is unknown"
    return "failed", code, f"exit status {code}"

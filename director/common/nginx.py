"""
Running an nginx of our own and changing its configuration safely.

L{NginxProcess} runs one nginx master (own C{-c} config, own pid file, own error log) that
outlives the daemon: a daemon that starts finds a running one through its pid file and
adopts it (check, reload) instead of starting another; a deliberate stop ends it.
L{NginxConfigDirectory} owns a directory of per-site files: changes that arrive together are
written together, checked with C{nginx -t}, and applied with one reload; a batch that fails
the check is rolled back and retried one change at a time, so a bad change fails alone and
nginx never serves a broken config.

The parts: L{nginx_paths} (its files, command line and errors), L{nginx_process} (running
it), L{nginx_config_directory} (changing its per-site files); this module names them all.
"""

from __future__ import annotations

from director.common.nginx_config_directory import NginxConfigDirectory
from director.common.nginx_paths import (
    LOG_KEEP,
    LOG_MAX_BYTES,
    SAFE_FILENAME,
    SETSID,
    SUPERVISED_ENV,
    NginxError,
    NginxPaths,
    check_blocking,
    nginx_string,
    stop_instance,
)
from director.common.nginx_process import NginxProcess, rotate_files

__all__ = [
    "LOG_KEEP",
    "LOG_MAX_BYTES",
    "SAFE_FILENAME",
    "SETSID",
    "SUPERVISED_ENV",
    "NginxConfigDirectory",
    "NginxError",
    "NginxPaths",
    "NginxProcess",
    "check_blocking",
    "nginx_string",
    "rotate_files",
    "stop_instance",
]

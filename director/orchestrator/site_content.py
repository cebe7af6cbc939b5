"""
What the runtime puts in, or looks for in, a site's own directory: a new static site's welcome
page, and whether a dynamic site has a C{run.sh} to run.
"""

from __future__ import annotations

import html

from director.orchestrator.files import FileError, SiteFiles

WELCOME_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{name}</title></head>
<body>
<h1>Welcome to {name}</h1>
<p>This site is new, and this is its first page: the file <code>public/index.html</code>.</p>
<p>To change it, open the site in the dashboard and edit <code>public/index.html</code> in the
file editor, or upload your own files to <code>public/</code>. Everything in
<code>public/</code> is on the web as soon as you save it.</p>
</body>
</html>
"""


def _welcome(files: SiteFiles, name: str) -> None:
    """
    A new static site's first page, unless its public/ already has something in it (files
    kept from before, or put there first): never replaces or adds to a user's files.
    """
    try:
        if files.list_dir("public"):
            return
        files.create("public/index.html", WELCOME_PAGE.format(name=html.escape(name)).encode())
    except FileError:
        pass  # something appeared meanwhile, or public/ is not a directory: leave it


def _run_sh_exists(files: SiteFiles) -> bool:
    """Whether the site has an executable run.sh where the service looks (links not followed)."""
    for rel in ("run.sh", "private/run.sh", "public/run.sh"):
        try:
            entry = files.stat(rel)
        except FileError:
            continue
        if entry.type == "file" and int(entry.mode, 8) & 0o111:
            return True
    return False

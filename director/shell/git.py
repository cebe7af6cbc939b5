"""
git over the shell server: `git push/clone/pull ssh://USER@HOST:PORT/SITE.git`.

The client runs `git-receive-pack '/SITE.git'` (or upload-pack) as an SSH command. The
path names the site (so the user name stays plain, which git's URL parser needs: it cannot
take a slash in the user name), and the shell server replaces the command by L{git_command}:
a script run in the site's container, as the site's user like any command, that keeps one
bare repository at /site/private/git/site.git (made on first use) with a pre-receive hook,
then runs the image's own git server on it.

The hook deploys a push of `main`: it checks the pushed commit out into /site/public (static
sites) or /site (dynamic sites) before the branch moves, so a deploy that fails leaves the
branch and the files as they were and the push fails with the reason. After a deploy, the
shell server asks the manager for a deploy operation (in the site's history; it restarts a
dynamic site) and tells the pusher how it went.
"""

from __future__ import annotations

import re
import shlex

from director.contract.sites import SITE_NAME_PATTERN

#: git's SSH commands: `git-upload-pack '/blog.git'` and the like (also `git upload-pack`,
#: and the path with or without the leading slash, `.git` or a trailing slash).
GIT_REQUEST = re.compile(
    r"^git[ -](?P<service>upload-pack|receive-pack|upload-archive)"
    rf" '?/?(?P<site>{SITE_NAME_PATTERN})(?:\.git)?/?'?$"
)

REPOSITORY = "/site/private/git/site.git"
COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
#: A line on stderr after git-receive-pack: the commit its hook deployed (not shown to the
#: user). Anything in the site could print it, which only gets it a deploy of its own site.
DEPLOYED_MARKER = "@director-deployed "

#: The deploy, in the repository's hooks/pre-receive. {target} and {kind} are filled in.
PRE_RECEIVE = r"""#!/bin/sh
# Written by Director on every push or fetch: edits here are replaced.
target={target}
kind={kind}
zero=0000000000000000000000000000000000000000
status=0
fail() { echo "Director: deploy failed: $*" >&2; status=1; }
while read old new ref; do
    if [ "$ref" != refs/heads/main ]; then
        echo "Director: $ref stored, not deployed (only main is deployed)."
        continue
    fi
    if [ "$new" = "$zero" ]; then
        echo "Director: main deleted; the site's files stay as they are."
        continue
    fi
    short=$(git rev-parse --short "$new")
    echo "Director: deploying $short to $target ..."
    if [ "$kind" = dynamic ]; then
        for top in $(git ls-tree --name-only "$new"); do
            case "$top" in
            .home|.director*)
                fail "the commit contains $top, which a deploy never replaces."
                continue 2 ;;
            esac
        done
        if git ls-tree "$new" private/git | grep -q .; then
            fail "the commit contains private/git (the deploy repository)."
            continue
        fi
        mode=$(git ls-tree "$new" run.sh | cut -d' ' -f1)
        if [ "$mode" != 100755 ]; then
            fail "a dynamic site needs an executable run.sh at the top of the" \
                "repository (git update-index --chmod=+x run.sh)."
            continue
        fi
        shell=sh
        git show "$new:run.sh" | head -n 1 | grep -q bash && shell=bash
        if ! git show "$new:run.sh" | "$shell" -n 2>/tmp/director-run-sh.err; then
            sed 's/^/    /' /tmp/director-run-sh.err >&2
            fail "run.sh has a syntax error ($shell -n), so the site would not start."
            continue
        fi
    fi
    mkdir -p "$target" || { status=1; continue; }
    if ! GIT_INDEX_FILE="$GIT_DIR/deploy-index" git --work-tree="$target" \
            read-tree --reset -u "$new" >&2; then
        fail "the files could not be written to $target."
        continue
    fi
    echo "Director: deployed $short to $target."
    echo "$new" > "$GIT_DIR/director-deployed"
done
exit $status
"""


def git_command(service: str, site_type: str) -> str:
    """The script run in the site's container for C{git-<service>} (see the module doc)."""
    target = "/site/public" if site_type == "static" else "/site"
    hook = PRE_RECEIVE.replace("{target}", shlex.quote(target)).replace(
        "{kind}", shlex.quote(site_type)
    )
    repo = shlex.quote(REPOSITORY)
    return (
        "umask 022; cd /site || exit 1;"
        f" if [ ! -d {repo} ]; then mkdir -p {repo} && git init -q --bare {repo} >&2"
        f" && git --git-dir={repo} symbolic-ref HEAD refs/heads/main || exit 1; fi;"
        f" printf '%s' {shlex.quote(hook)} > {repo}/hooks/pre-receive"
        f" && chmod 755 {repo}/hooks/pre-receive || exit 1;"
        + (
            f" exec git-{service} {repo}"
            if service != "receive-pack"
            # After the push, tell the shell server (on stderr) what the hook deployed, so
            # it can record the deploy and restart the site (see DEPLOYED_MARKER).
            else f" rm -f {repo}/director-deployed; git-receive-pack {repo}; status=$?;"
            f" if [ -s {repo}/director-deployed ]; then"
            f" printf '{DEPLOYED_MARKER}%s\\n' \"$(cat {repo}/director-deployed)\" >&2;"
            f" rm -f {repo}/director-deployed; fi; exit $status"
        )
    )

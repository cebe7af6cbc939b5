"""
`director images ...`: build the offline base images (bootstrap, on this machine) and manage
the image catalogue (list, add, edit, delete, through the manager's API as an admin).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from director.manager.catalogue import LOGOS, VISIBILITY


def bootstrap_command(args: argparse.Namespace) -> int:
    import subprocess

    from director.orchestrator.images import DERIVED_IMAGES, bootstrap

    known = [tag for tag, _ in DERIVED_IMAGES]
    only = tuple(args.only.split(",")) if args.only else None
    unknown = [tag for tag in only or () if tag not in known]
    if unknown:
        print(f"director: --only takes some of {', '.join(known)}", file=sys.stderr)
        return 2
    try:
        built = bootstrap(force=args.force, only=only)
    except (subprocess.CalledProcessError, OSError, RuntimeError) as e:
        print(f"director: building the base images failed: {e}", file=sys.stderr)
        return 1
    print("built " + ", ".join(built) if built else "base images already present")
    return 0


def _entry(args: argparse.Namespace) -> dict[str, Any]:
    """The fields given on the command line (an edit changes only those)."""
    body: dict[str, Any] = {"name": args.name}
    for key in ("friendly_name", "description", "logo", "visibility"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    if args.setup is not None:
        body["setup_commands"] = list(args.setup)
    if args.no_setup:
        body["setup_commands"] = []
    if args.run_template is not None:
        body["run_template"] = (
            sys.stdin.read() if args.run_template == "-" else Path(args.run_template).read_text()
        )
    if args.default:
        body["is_default"] = True
    return body


def catalogue_command(args: argparse.Namespace, api: Any) -> int:
    from director.apiclient import APICallFailed

    try:
        if args.images_command == "list":
            for image in api.get("/api/v1/images")["images"]:
                default = " (default)" if image["is_default"] else ""
                print(
                    f"{image['name']:<32} {image['visibility']:<9} "
                    f"{image['friendly_name']}{default}"
                )
                for command in image["setup_commands"]:
                    print(f"    RUN {command}")
            return 0
        if args.images_command == "delete":
            api.delete("/api/v1/images?" + urlencode({"name": args.name}))
            print(f"{args.name} taken out of the catalogue")
            return 0
        names = {i["name"] for i in api.get("/api/v1/images")["images"]}
        if args.images_command == "add" and args.name in names:
            print(f"director: {args.name} is in the catalogue already (use edit)", file=sys.stderr)
            return 1
        if args.images_command == "edit" and args.name not in names:
            print(f"director: {args.name} is not in the catalogue (use add)", file=sys.stderr)
            return 1
        api.call("PUT", "/api/v1/images", _entry(args))
        print(f"{args.name} {'added' if args.images_command == 'add' else 'changed'}")
        return 0
    except (APICallFailed, OSError) as e:
        print(f"director: {e}", file=sys.stderr)
        return 1


def add_parsers(sub: Any, default_config: str, api_command: Any) -> None:
    """`director images` and its commands; C{api_command(args, handler)} runs through the API."""
    p = sub.add_parser("images", help="site images: build the base ones, manage the catalogue")
    images = p.add_subparsers(dest="images_command", required=True, metavar="COMMAND")
    p = images.add_parser("bootstrap", help="build the offline base images (debootstrap)")
    p.add_argument("--force", action="store_true", help="rebuild even if present")
    p.add_argument(
        "--only", metavar="TAGS", help="comma-separated images to build, e.g. director/python:3"
    )
    p.set_defaults(func=bootstrap_command)
    for name, text in (
        ("list", "the catalogue (admins also see hidden and teachers-only images)"),
        ("add", "add an image to the catalogue (admins)"),
        ("edit", "change a catalogue image; only the options given change (admins)"),
        ("delete", "take an image out of the catalogue (refused while sites use it)"),
    ):
        ip = images.add_parser(name, help=text)
        if name != "list":
            ip.add_argument("name", help="the Docker image, e.g. director/node:18")
        if name in ("add", "edit"):
            ip.add_argument("--friendly-name", dest="friendly_name")
            ip.add_argument("--description")
            ip.add_argument("--logo", choices=[x for x in LOGOS if x], help="a curated icon")
            ip.add_argument("--visibility", choices=VISIBILITY)
            ip.add_argument(
                "--setup",
                action="append",
                metavar="COMMAND",
                help="a setup command (repeat, in order; each is one RUN step of a site's build)",
            )
            ip.add_argument("--no-setup", action="store_true", help="remove every setup command")
            ip.add_argument(
                "--run-template", metavar="FILE", help="the run.sh of new dynamic sites (- = stdin)"
            )
            ip.add_argument("--default", action="store_true", help="the default for new sites")
        ip.add_argument("--token")
        ip.add_argument("--url", help="the manager's URL (default: manager.url)")
        ip.add_argument("--config", default=default_config)
        ip.set_defaults(func=lambda args: api_command(args, catalogue_command))

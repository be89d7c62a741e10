"""`motcua`, the ops command line (DESIGN.md §12).

Each subcommand lives in its own module exposing `register(subparsers)`; the module sets
`func` on its parser, called with the parsed arguments, returning the exit code. The services
add theirs through the `motcua.commands` entry points (pyproject.toml), so this package never
names a service.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import entry_points

# subcommand modules, in the order `motcua --help` lists them
COMMAND_MODULES = [
    "shared.cli.local",       # local up|down|status|env, demo
    "shared.cli.deadline",    # deadline
    "shared.cli.rules",       # rules list|show
    "shared.cli.catalog",     # catalog import|check, directory import
    "shared.cli.keys",        # keys create|list|revoke
]
ENTRY_POINT_GROUP = "motcua.commands"   # name -> "module:register", listed after, by name


class CliError(Exception):
    """Bad input or a failed operation: printed as `motcua: error: …`, exit code 2."""


def cli_db(settings):
    """The MongoDB database of `settings`, pinged first: CliError naming MONGO_URI when unreachable."""
    from pymongo.errors import PyMongoError

    from shared.platform.mongo import mongo_client

    client = mongo_client(settings, appname="motcua-cli")
    try:
        client.admin.command("ping")
    except PyMongoError as exc:
        raise CliError(f"cannot reach MongoDB at MONGO_URI ({type(exc).__name__}); "
                       f"is the stack running? (motcua local up)") from None
    return client[settings.mongo_db]


def reference_directory(settings, db=None):
    """The agency directory the services use (VersionedStore.current_or_file): the version
    imported into MongoDB (`motcua directory import`), else DIRECTORY_FILE. CliError when it
    cannot be read."""
    from pymongo.errors import PyMongoError

    from shared.platform.refdata import DirectoryStore

    try:
        return DirectoryStore.current_or_file(settings.directory_file, db if db is not None else cli_db(settings))
    except (OSError, ValueError, PyMongoError) as exc:
        raise CliError(f"cannot read the agency directory: {exc}") from None


def reference_catalog(settings, db=None):
    """The procedure catalog the services use: the version imported into MongoDB (`motcua
    catalog import`), else CATALOG_FILE. CliError when it cannot be read."""
    from pymongo.errors import PyMongoError

    from shared.platform.refdata import CatalogStore

    try:
        return CatalogStore.current_or_file(settings.catalog_file, db if db is not None else cli_db(settings))
    except (OSError, ValueError, PyMongoError) as exc:
        raise CliError(f"cannot read the procedure catalog: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="motcua", description="Ops CLI of the một cửa dossier tracking system.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:   # not written yet
                continue
            raise
        module.register(sub)
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"motcua: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

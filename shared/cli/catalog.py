"""`motcua catalog check|import FILE` and `motcua directory import FILE` (DESIGN.md §12).

`check` validates a procedure catalog and prints a summary (exit 2 with every error otherwise).
`import` validates, then stores a new version in MongoDB (MONGO_URI / MONGO_DB): collections
`catalog_versions` + `catalog_current`, and `directory_versions` + `directory_current`.
The file format is in docs/catalog.md.
"""
from __future__ import annotations

import json

from shared.cli import CliError, cli_db
from shared.domain.catalog import CatalogError, load_catalog
from shared.domain.directory import DirectoryError, load_directory
from shared.platform.clock import clock_from_env
from shared.platform.config import Settings
from shared.platform.refdata import CatalogStore, DirectoryStore


_db = cli_db  # the CLI's one MongoDB opener


def _loader(load, error_cls, what: str):
    """`load` with its file errors turned into a CLI error naming `what` the file holds."""
    def run(path: str):
        try:
            return load(path)
        except error_cls as exc:
            raise CliError(f"invalid {what}: {exc}") from None
    return run


def _print_catalog(summary: dict) -> None:
    print(f"  {summary['procedures']} procedures ({summary['versions']} dated versions), "
          f"{summary['sourced']} sourced, {summary['sample']} marked sample")
    for field_name, n in summary["by_field"].items():
        print(f"  {n:3d}  {field_name}")


def _print_directory(summary: dict) -> None:
    print(f"  {summary['agencies']} agencies, depth {summary['depth']}, roots: {', '.join(summary['roots'])}")
    if summary["without_head"]:
        print(f"  without a head (alerts fall back to the parent): {', '.join(summary['without_head'])}")


def _checker(load, show):
    """`motcua <kind> check FILE`: validate with `load`, print its summary (`show`) or as JSON."""
    def run(args) -> int:
        summary = load(args.file).summary()
        if args.json:
            print(json.dumps(summary, ensure_ascii=False, indent=2))
            return 0
        print(f"{args.file}: OK, version {summary['version']}")
        show(summary)
        return 0
    return run


def _importer(store_cls, load, kind: str, unit: str):
    """`motcua <kind> import FILE`: validate with `load`, store as the current version."""
    def run(args) -> int:
        obj = load(args.file)
        settings = Settings.from_env()
        version = store_cls(_db(settings)).store(obj, clock_from_env().now(), source=str(args.file))
        print(f"imported {len(obj)} {unit} from {args.file} into "
              f"{settings.mongo_db}.{store_cls.VERSIONS}")
        print(f"{kind} version {version}")
        return 0
    return run


# kind -> (what the file holds, its unit, loader, its error, summary printer, store)
KINDS = {
    "catalog": ("procedure catalog", "procedures", load_catalog, CatalogError, _print_catalog,
                CatalogStore),
    "directory": ("agency directory", "agencies", load_directory, DirectoryError, _print_directory,
                  DirectoryStore),
}


def register(subparsers) -> None:
    """Add `catalog` and `directory` to the `motcua` dispatcher."""
    for kind, (what, unit, load_file, error_cls, show, store_cls) in KINDS.items():
        load = _loader(load_file, error_cls, what)
        top = subparsers.add_parser(kind, help=f"{what}: check or import a file",
                                    description=f"Validate or import {_a(what)} (docs/catalog.md).")
        sub = top.add_subparsers(dest=f"{kind}_command", metavar="ACTION")
        check = sub.add_parser("check", help="validate FILE and print a summary",
                               description=f"Validate a {kind} file; exit 2 listing every error.")
        check.add_argument("file", metavar="FILE", help=f"{kind} file (YAML or JSON)")
        check.add_argument("--json", action="store_true", help="print the summary as JSON")
        check.set_defaults(func=_checker(load, show))
        imp = sub.add_parser("import", help=f"validate FILE and store it as the current {kind} version",
                             description="Validate, then store into MongoDB (MONGO_URI, MONGO_DB), "
                                         f"collection {store_cls.VERSIONS}; prints the version.")
        imp.add_argument("file", metavar="FILE", help=f"{kind} file (YAML or JSON)")
        imp.set_defaults(func=_importer(store_cls, load, kind, unit))
        top.set_defaults(func=lambda a, top=top: (top.print_help(), 2)[1])


def _a(what: str) -> str:
    """The noun with its indefinite article, for help texts."""
    return ("an " if what[0] in "aeiou" else "a ") + what

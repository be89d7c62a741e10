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


def _load_catalog(path: str):
    try:
        return load_catalog(path)
    except CatalogError as exc:
        raise CliError(f"invalid procedure catalog: {exc}") from None


def _load_directory(path: str):
    try:
        return load_directory(path)
    except DirectoryError as exc:
        raise CliError(f"invalid agency directory: {exc}") from None


def _catalog_check(args) -> int:
    catalog = _load_catalog(args.file)
    summary = catalog.summary()
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
        return 0
    print(f"{args.file}: OK, version {summary['version']}")
    print(f"  {summary['procedures']} procedures ({summary['versions']} dated versions), "
          f"{summary['sourced']} sourced, {summary['sample']} marked sample")
    for field_name, n in summary["by_field"].items():
        print(f"  {n:3d}  {field_name}")
    return 0


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


def _directory_check(args) -> int:
    directory = _load_directory(args.file)
    summary = directory.summary()
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
        return 0
    print(f"{args.file}: OK, version {summary['version']}")
    print(f"  {summary['agencies']} agencies, depth {summary['depth']}, roots: {', '.join(summary['roots'])}")
    if summary["without_head"]:
        print(f"  without a head (alerts fall back to the parent): {', '.join(summary['without_head'])}")
    return 0


def register(subparsers) -> None:
    """Add `catalog` and `directory` to the `motcua` dispatcher."""
    cat = subparsers.add_parser("catalog", help="procedure catalog: check or import a file",
                                description="Validate or import a procedure catalog (docs/catalog.md).")
    cat_sub = cat.add_subparsers(dest="catalog_command", metavar="ACTION")
    check = cat_sub.add_parser("check", help="validate FILE and print a summary",
                               description="Validate a catalog file; exit 2 listing every error.")
    check.add_argument("file", metavar="FILE", help="catalog file (YAML or JSON)")
    check.add_argument("--json", action="store_true", help="print the summary as JSON")
    check.set_defaults(func=_catalog_check)
    imp = cat_sub.add_parser("import", help="validate FILE and store it as the current catalog version",
                             description="Validate, then store into MongoDB (MONGO_URI, MONGO_DB), "
                                         "collection catalog_versions; prints the version.")
    imp.add_argument("file", metavar="FILE", help="catalog file (YAML or JSON)")
    imp.set_defaults(func=_importer(CatalogStore, _load_catalog, "catalog", "procedures"))
    cat.set_defaults(func=lambda a: (cat.print_help(), 2)[1])

    dire = subparsers.add_parser("directory", help="agency directory: check or import a file",
                                 description="Validate or import an agency directory (docs/catalog.md).")
    dir_sub = dire.add_subparsers(dest="directory_command", metavar="ACTION")
    dcheck = dir_sub.add_parser("check", help="validate FILE and print a summary",
                                description="Validate a directory file; exit 2 listing every error.")
    dcheck.add_argument("file", metavar="FILE", help="directory file (YAML or JSON)")
    dcheck.add_argument("--json", action="store_true", help="print the summary as JSON")
    dcheck.set_defaults(func=_directory_check)
    dimp = dir_sub.add_parser("import", help="validate FILE and store it as a new directory version",
                              description="Validate, then store into MongoDB (MONGO_URI, MONGO_DB), "
                                          "collection directory_versions; prints the version.")
    dimp.add_argument("file", metavar="FILE", help="directory file (YAML or JSON)")
    dimp.set_defaults(func=_importer(DirectoryStore, _load_directory, "directory", "agencies"))
    dire.set_defaults(func=lambda a: (dire.print_help(), 2)[1])

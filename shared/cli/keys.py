"""`motcua keys create --agency CODE --role ROLE | list | revoke ID` — API keys (shared.platform.auth).

`create` prints the key once, alone on the last line (only its SHA-256 is stored): clients send
it as `Authorization: Bearer KEY`. The agency must exist in the directory the services use: the
version imported into MongoDB (`motcua directory import`), else DIRECTORY_FILE.
"""
from __future__ import annotations

import json

from shared.platform.auth import ROLES, KeyStore
from shared.cli import CliError, cli_db, reference_directory
from shared.platform.config import Settings


_db = cli_db  # the CLI's one MongoDB opener


def _create(args) -> int:
    settings = Settings.from_env()
    db = _db(settings)
    if not args.no_directory_check:
        from shared.platform.refdata import DirectoryStore
        from shared.domain.directory import load_directory
        if args.directory:
            try:
                directory = load_directory(args.directory)
            except (OSError, ValueError) as exc:
                raise CliError(f"cannot read the agency directory: {exc}") from None
        else:
            directory = reference_directory(settings, db)     # the one intake checks keys against
        if args.agency not in directory:
            raise CliError(f"agency {args.agency!r} is not in the agency directory "
                           f"({DirectoryStore.origin(directory)})")
    key_id, secret = KeyStore(db).create(args.agency, args.role, args.label or "")
    print(f"created key {key_id} for agency {args.agency}, role {args.role}")
    print("store it now: it is shown once and cannot be recovered (send as 'Authorization: Bearer KEY'):")
    print(secret)
    return 0


def _list(args) -> int:
    keys = KeyStore(_db(Settings.from_env())).list()
    if args.json:
        print(json.dumps(keys, default=str, ensure_ascii=False, indent=2))
        return 0
    if not keys:
        print("no API keys")
        return 0
    print(f"{'KEY ID':<17} {'AGENCY':<20} {'ROLE':<11} {'CREATED':<26} {'REVOKED':<26} LABEL")
    for k in keys:
        print(f"{k['key_id']:<17} {k['agency_code']:<20} {k['role']:<11} "
              f"{str(k.get('created_at')):<26} {str(k.get('revoked_at') or '-'):<26} {k.get('label', '')}")
    return 0


def _revoke(args) -> int:
    if not KeyStore(_db(Settings.from_env())).revoke(args.key_id):
        raise CliError(f"no active key {args.key_id!r} (see `motcua keys list`)")
    print(f"revoked key {args.key_id}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("keys", help="API keys: create | list | revoke",
                              description="Manage API keys (stored hashed in MongoDB, MONGO_URI).")
    sub = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    c = sub.add_parser("create", help="create a key bound to an agency subtree and a role")
    c.add_argument("--agency", required=True, help="agency code (the key covers its subtree)")
    c.add_argument("--role", required=True, choices=ROLES, help="role of the key")
    c.add_argument("--label", help="free text, e.g. the client system's name")
    c.add_argument("--directory", help="check against this directory file instead (default: the "
                                        "version imported into MongoDB, else DIRECTORY_FILE)")
    c.add_argument("--no-directory-check", action="store_true",
                   help="do not require the agency to be in the directory")
    c.set_defaults(func=_create)
    ls = sub.add_parser("list", help="list keys (never their secrets)")
    ls.add_argument("--json", action="store_true", help="JSON output")
    ls.set_defaults(func=_list)
    r = sub.add_parser("revoke", help="revoke a key by its id")
    r.add_argument("key_id", metavar="ID")
    r.set_defaults(func=_revoke)

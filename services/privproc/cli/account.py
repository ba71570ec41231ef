"""``privproc account create|disable``: manage ACS accounts (prints a new credential)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from privproc import stackfile
from privproc.errors import ConfigError


def register(sub: Any) -> None:
    account = sub.add_parser("account", help="manage ACS accounts (prints a new credential)")
    account.add_argument("action", choices=["create", "disable"])
    account.add_argument("account", help="account id (lowercase identifier)")
    account.add_argument("--state-dir", type=Path, default=stackfile.DEFAULT_STATE_DIR / "acs")
    account.set_defaults(func=account_cmd)


def account_cmd(args: argparse.Namespace) -> int:
    """Create, re-enable or disable an ACS account in its database; prints the credential."""
    from privproc.acs.accounts import AccountStore
    from privproc.acs.store import Database

    db = Database(args.state_dir / "acs.sqlite3")
    try:
        accounts = AccountStore(db)
        if args.action == "disable":
            accounts.disable(args.account)
            print(f"account {args.account} disabled")
        else:
            try:
                print(accounts.create(args.account))
            except ValueError as err:
                raise ConfigError("account ids are short lowercase identifiers") from err
    finally:
        db.close()
    return 0

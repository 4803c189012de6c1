"""``wulian explorer …``: manage the people who sign in to a node's chain explorer.

* ``wulian explorer add-user --config NODE.toml --user NAME --org ORG [--name TEXT]
  [--password-stdin]`` — create an account acting for organisation ORG (its role and
  channel permissions apply). The password is read from the terminal (twice) or, with
  ``--password-stdin``, as one line from standard input; it is stored as a salted
  scrypt hash.
* ``wulian explorer passwd --config NODE.toml --user NAME [--password-stdin]``
* ``wulian explorer disable-user`` / ``enable-user --config NODE.toml --user NAME``
* ``wulian explorer remove-user --config NODE.toml --user NAME``
* ``wulian explorer list-users --config NODE.toml``
* ``wulian explorer check-audit --config NODE.toml`` — recompute the audit log's hash
  chain; exit 1 if a line was changed or removed.

Accounts live in ``<data_dir>/explorer/accounts.json`` (mode 0600); a running node
picks changes up at the next request (a removed or disabled user's sessions end).
The org must be in the genesis and its role must read at least one channel; an org
registered later by governance is accepted with ``--allow-unlisted-org`` (its role is
then checked at each sign-in). Errors are one line on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from dataclasses import replace
from typing import Any

from ledger.errors import ConfigError
from ledger.genesis import Genesis, load_genesis
from node.config import NodeConfig, load_node_config
from node.explorer.accounts import (
    AccountError,
    AccountFile,
    accounts_path,
    audit_path,
    check_new_password,
    hash_password,
    valid_username,
)
from node.explorer.audit import check_audit_log
from node.explorer.port import Account


def register(subparsers: Any) -> None:
    ex = subparsers.add_parser(
        "explorer",
        help="manage chain-explorer accounts (clerks, auditors) and check its audit log",
        description="Manage the accounts of this node's chain explorer (/explorer) and "
        "check its audit log. Accounts act for an organisation of the network: its role "
        "decides which channels they may read.",
    )
    sub = ex.add_subparsers(dest="explorer_command", metavar="ACTION")
    sub.required = True

    def common(p: argparse.ArgumentParser, user: bool = True) -> None:
        p.add_argument("--config", required=True, metavar="FILE", help="the node's config file")
        if user:
            p.add_argument("--user", required=True, metavar="NAME", help="username")

    add = sub.add_parser("add-user", help="create an account")
    common(add)
    add.add_argument("--org", required=True, metavar="ORG", help="organisation id")
    add.add_argument("--name", default="", metavar="TEXT", help="display name (e.g. 李明)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.add_argument(
        "--allow-unlisted-org",
        action="store_true",
        help="accept an org not in the genesis (registered later by governance)",
    )
    add.set_defaults(func=cmd_add_user)

    pw = sub.add_parser("passwd", help="set a new password")
    common(pw)
    pw.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    pw.set_defaults(func=cmd_passwd)

    for name, flag in (("disable-user", True), ("enable-user", False)):
        p = sub.add_parser(name, help=f"{name.split('-')[0]} an account (sessions end)")
        common(p)
        p.set_defaults(func=cmd_set_disabled, disabled=flag)

    rm = sub.add_parser("remove-user", help="delete an account (sessions end)")
    common(rm)
    rm.set_defaults(func=cmd_remove_user)

    ls = sub.add_parser("list-users", help="list the accounts")
    common(ls, user=False)
    ls.set_defaults(func=cmd_list_users)

    ck = sub.add_parser("check-audit", help="verify the audit log's hash chain")
    common(ck, user=False)
    ck.set_defaults(func=cmd_check_audit)


def _config(args: argparse.Namespace) -> NodeConfig:
    return load_node_config(args.config)


def _username(name: str) -> str:
    if not valid_username(name):
        raise AccountError(
            f"username {name!r} is not valid (1-64 of a-z 0-9 . _ @ -, starting with a "
            "letter or digit)"
        )
    return name


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        check_new_password(password)
        return password
    if not sys.stdin.isatty():
        raise AccountError("no terminal to ask for the password: use --password-stdin")
    password = getpass.getpass("password: ")
    check_new_password(password)
    if getpass.getpass("again: ") != password:
        raise AccountError("the passwords differ")
    return password


def _check_org(genesis: Genesis, org_id: str, allow_unlisted: bool, source: str) -> None:
    org = next((o for o in genesis.orgs if o.org_id == org_id), None)
    if org is None:
        if allow_unlisted:
            return
        raise ConfigError(
            source,
            "orgs",
            f"no org {org_id!r} in the genesis (use --allow-unlisted-org for an org "
            "registered by governance)",
        )
    readable = [c.channel_id for c in genesis.channels if org.role in c.read]
    if not readable:
        raise AccountError(
            f"org {org_id!r} has role {org.role!r}, which reads no channel in full: "
            "its people cannot use the explorer (lenders use the SDK)"
        )


def cmd_add_user(args: argparse.Namespace) -> int:
    cfg = _config(args)
    user = _username(args.user)
    genesis = load_genesis(cfg.genesis_file)
    _check_org(genesis, args.org, args.allow_unlisted_org, str(cfg.genesis_file))
    store = AccountFile(accounts_path(cfg.data_dir))
    exists = f"user {user!r} exists (use passwd, or remove-user first)"
    if user in store.load():
        raise AccountError(exists)
    password = _read_password(args.password_stdin)
    account = Account(
        user, args.org, hash_password(password), args.name, False, time.time_ns() // 1_000_000
    )
    with store.editing() as accounts:  # locked: concurrent commands lose nothing
        if user in accounts:
            raise AccountError(exists)
        accounts[user] = account
    print(f"added {user} (org {args.org}) to {store.path}")
    return 0


def _existing(args: argparse.Namespace) -> tuple[AccountFile, str]:
    cfg = _config(args)
    user = _username(args.user)
    store = AccountFile(accounts_path(cfg.data_dir))
    _check_exists(store, store.load(), user)
    return store, user


def _check_exists(store: AccountFile, accounts: dict[str, Account], user: str) -> None:
    if user not in accounts:
        raise AccountError(f"no user {user!r} in {store.path}")


def cmd_passwd(args: argparse.Namespace) -> int:
    store, user = _existing(args)
    password_hash = hash_password(_read_password(args.password_stdin))
    with store.editing() as accounts:
        _check_exists(store, accounts, user)
        accounts[user] = replace(accounts[user], password_hash=password_hash)
    print(f"password of {user} changed")
    return 0


def cmd_set_disabled(args: argparse.Namespace) -> int:
    store, user = _existing(args)
    with store.editing() as accounts:
        _check_exists(store, accounts, user)
        accounts[user] = replace(accounts[user], disabled=args.disabled)
    print(f"{user} {'disabled' if args.disabled else 'enabled'}")
    return 0


def cmd_remove_user(args: argparse.Namespace) -> int:
    store, user = _existing(args)
    with store.editing() as accounts:
        _check_exists(store, accounts, user)
        del accounts[user]
    print(f"removed {user}")
    return 0


def cmd_list_users(args: argparse.Namespace) -> int:
    cfg = _config(args)
    for a in AccountFile(accounts_path(cfg.data_dir)).load().values():
        state = "disabled" if a.disabled else "active"
        print(f"{a.username}\t{a.org_id}\t{state}\t{a.display_name}")
    return 0


def cmd_check_audit(args: argparse.Namespace) -> int:
    cfg = _config(args)
    path = audit_path(cfg.data_dir)
    if not path.exists():
        print(f"{path}: no audit log yet")
        return 0
    lines, problem = check_audit_log(path)
    if problem is not None:
        print(f"wulian: error: {path}: line {lines}: {problem}", file=sys.stderr)
        return 1
    print(f"{path}: {lines} entries, hash chain intact")
    return 0

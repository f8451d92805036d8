"""``moska-sim validate FILE``: print the resolved config, or every error naming its field."""

from __future__ import annotations

import sys

from sim.cli.common import ArgumentParser
from sim.config import ConfigError, load_config, parse_assignment


def validate_main(argv: list[str]) -> int:
    """``moska-sim validate FILE [--json] [--set KEY=VALUE ...]``: resolved config, or errors.

    Prints the resolved config to stdout and returns 0, or prints every error to stderr
    (one per line) and returns 2.
    """
    parser = ArgumentParser(
        prog="moska-sim validate",
        description="Check an experiment YAML; print it resolved (defaults filled in).")
    parser.add_argument("file", help="experiment YAML")
    parser.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field by dotted path, e.g. run.seed=3 (repeatable)")
    args = parser.parse_args(argv)
    try:
        overrides = dict(parse_assignment(item) for item in args.set)
        cfg = load_config(args.file, overrides)
    except ConfigError as exc:
        count = len(exc.issues)
        head = f"moska-sim validate: {count} error{'s' if count != 1 else ''}"
        print(f"{head}\n{exc}", file=sys.stderr)
        return 2
    if args.json:
        print(cfg.to_json())
    else:
        print(f"# {args.file}: valid; resolved config (defaults filled in)")
        print(cfg.to_yaml(), end="")
    return 0


__all__ = ["validate_main"]

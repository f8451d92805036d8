"""``moska-sim validate FILE``: print the resolved config, or every error naming its field."""

from __future__ import annotations

import json
import sys

from sim.cli.common import ArgumentParser, is_study_file
from sim.config import ConfigError, load_config, parse_assignment
from sim.studies.variants import load_variants_file


def validate_main(argv: list[str]) -> int:
    """``moska-sim validate FILE [--json] [--set KEY=VALUE ...]``: resolved config, or errors.

    Prints the resolved config to stdout and returns 0, or prints every error to stderr
    (one per line) and returns 2.
    """
    parser = ArgumentParser(
        prog="moska-sim validate",
        description="Check an experiment YAML (or a study's variants file); print it "
                    "resolved (defaults filled in).")
    parser.add_argument("file", help="experiment YAML or study (variants) file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field by dotted path, e.g. run.seed=3 (repeatable)")
    args = parser.parse_args(argv)
    try:
        overrides = dict(parse_assignment(item) for item in args.set)
        if is_study_file(args.file):  # base + variants: every variant resolved and checked
            inputs = load_variants_file(args.file, overrides)
            if args.json:
                print(json.dumps({"study": inputs.name, "variants": {
                    v.label: v.config.to_dict() for v in inputs.variants}}, indent=2))
            else:
                print(f"# {args.file}: valid study {inputs.name!r}, {len(inputs.variants)} "
                      "variant(s), each resolved below (run it with moska-sim compare)")
                for v in inputs.variants:
                    print(f"--- # variant {v.label}")
                    print(v.config.to_yaml(), end="")
            return 0
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

"""``moska-sim calibrate INPUT...``: fit kernel profiles and links on training shapes and
report held-out error (the work is ``sim.calibration.calibrate``).

User errors print one ``error:`` line naming the file or field and return 2; a fit worse held
out than the uncalibrated model prints its table and is refused (exit 2, nothing written).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from hw.profiles import PROFILE_DIR
from hw.specs import PRESET_DIR
from sim.calibration.calibrate import (
    DOC,
    USER_ERRORS,
    CalibrationError,
    RefusedFit,
    fidelity_table,
    run_calibration,
)
from sim.cli.common import ArgumentParser


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="moska-sim calibrate",
        description="Fit hw's kernel profiles and links to measured times on training shapes and "
                    "report the error on held-out shapes, per op kind, before and after. Method: "
                    "docs/calibration.md; figures: docs/fidelity.md.",
    )
    p.add_argument("inputs", type=Path, nargs="*", metavar="INPUT",
                   help="probe files (*.probe.json), a Vidur profile folder, or moska traces "
                        "(*.trace.npz; the last one is held out)")
    p.add_argument("--chip", help="chip preset the measurements are of (default: from each input)")
    p.add_argument("--write", action="store_true",
                   help="store the fitted profile entries (hw/profiles) and links "
                        "(hw/presets/links.yaml)")
    p.add_argument("--default-from", metavar="CHIP",
                   help="with --write: also make CHIP's fitted entry each profile's 'default' "
                        "(chips never measured)")
    p.add_argument("--profile-dir", type=Path, default=PROFILE_DIR, help="where --write puts profiles")
    p.add_argument("--preset-dir", type=Path, default=PRESET_DIR,
                   help="where --write finds links.yaml")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--fidelity", action="store_true",
                   help="fit nothing: print docs/fidelity.md's table, the shipped model's error on "
                        "the shipped measurements (with --write: update docs/fidelity.md)")
    p.add_argument("--doc", type=Path, default=DOC, help="with --fidelity --write: the file to update")
    return p


def calibrate_main(argv: list[str]) -> int:
    """Entry point of ``moska-sim calibrate``: 0 on success, 2 on a user error or a refused fit."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    command = "moska-sim calibrate " + " ".join(shlex.quote(a) for a in argv)
    try:
        if args.fidelity:
            if args.inputs:
                raise CalibrationError("--fidelity: takes no INPUT; it reads the shipped probe "
                                       "files, Vidur profiles and H100 sample traces")
            block, changed = fidelity_table(args.doc, args.write)
            print(block)
            if args.write:
                print(f"{'updated' if changed else 'unchanged'}: {args.doc}")
            return 0
        run = run_calibration(list(args.inputs), args.chip, write=args.write,
                              default_from=args.default_from, profile_dir=args.profile_dir,
                              preset_dir=args.preset_dir, command=command)
    except RefusedFit as exc:
        print(exc.text)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(run.to_dict(), indent=1, sort_keys=True))
    else:
        print(run.text)
        for p in run.written:
            print(f"wrote {p}")
    return 0


__all__ = ["build_parser", "calibrate_main"]

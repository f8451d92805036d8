"""`moska-sim analyze CONFIG`: the closed-form model of every system on the configured cluster.

Prints the headline table (each system at the configured concurrency), the best
throughput of each system per shared-context size with MoSKA's ratio over it, and writes
``analysis.json``, ``analysis.png`` and ``analysis.md`` (throughput vs concurrency and vs
shared tokens, one line per system, log axes).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from sim.analytic import scenario
from sim.analytic.sweeps import analyze, text_table, tokens_label, write_outputs
from sim.atomic import staged_folder
from sim.cli.common import ArgumentParser, add_set_argument, check_out_path, overrides_from_args
from sim.config import analysis_settings, load_config, resolve


def analyze_main(argv: list[str]) -> int:
    p = ArgumentParser(prog="moska-sim analyze", description=__doc__)
    p.add_argument("config", help="experiment YAML (e.g. workloads/paper.yaml)")
    p.add_argument("--json", action="store_true", help="print the analysis as JSON")
    p.add_argument("--out", help="folder for analysis.json/.png/.md "
                                 "(default results/<name>-analysis-<timestamp>)")
    p.add_argument("--no-write", action="store_true", help="print only; write no files")
    add_set_argument(p, "batching.microbatches=2")
    args = p.parse_args(argv)
    cfg = load_config(args.config, overrides_from_args(args))
    out: Path | None = None
    if not args.no_write:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = check_out_path(args.out if args.out is not None
                             else Path("results") / f"{cfg.name}-analysis-{stamp}")
    sc = scenario(resolve(cfg, with_workload=False))
    settings = analysis_settings(cfg)
    batch = settings.batch
    result = analyze(sc, batch, list(settings.batch_sweep), list(settings.shared_tokens_sweep))
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        s = result["scenario"]
        tp = s.get("unique_tp", 1)
        inside = (f" (moska replicas of tp {tp}, node link {s['node_link_GBps']:g} GB/s)"
                  if tp > 1 else "")
        print(f"{result['name']}: {s['model']} {s['precision']}, unique {s['unique']}{inside}, "
              f"shared {s['shared']}, link {s['link_GBps']} GB/s; unique "
              f"{tokens_label(s['unique_tokens'])} tokens, shared {tokens_label(s['shared_tokens'])}, "
              f"chunks {tokens_label(s['chunk_tokens'])}, keep {s['keep_fraction']}")
        print(f"\nEvery system at {batch} concurrent requests:")
        print(text_table(result["table"]))
        print("\nBest throughput (tokens/s) per shared-context size, and MoSKA's ratio:")
        print(text_table(result["shared_table"]))
    if out is not None:
        with staged_folder(out) as tmp:  # the folder appears whole or not at all
            files = [out / os.path.relpath(f, tmp) for f in write_outputs(tmp, result)]
        if not args.json:
            print(f"\nwrote {', '.join(str(f) for f in files)}")
    return 0


__all__ = ["analyze_main"]

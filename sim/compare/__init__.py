"""``moska-sim compare``: the same workload on several hardware configs or systems, one report.

- :func:`compare_main` is the command (argv in, exit status out);
- :func:`load_inputs` / :func:`load_variants_file` read the configs or a variants file;
- :func:`run_compare` runs everything and writes the results folder;
- :mod:`sim.compare.cost`, :mod:`sim.compare.saturation`, :mod:`sim.compare.sweep` and
  :mod:`sim.compare.jobs` each do one part (prices, the closed-form saturation point, the
  load sweep's points, running simulations in parallel).
"""

from sim.compare.cli import compare_main
from sim.compare.cost import cluster_price_per_hour, cost_per_million_tokens, run_cost
from sim.compare.runner import CompareResult, run_compare
from sim.compare.saturation import Saturation, analytic_saturation
from sim.compare.sweep import SweepSettings
from sim.compare.variants import CompareInputs, Variant, load_inputs, load_variants_file

__all__ = [
    "CompareInputs",
    "CompareResult",
    "Saturation",
    "SweepSettings",
    "Variant",
    "analytic_saturation",
    "cluster_price_per_hour",
    "compare_main",
    "cost_per_million_tokens",
    "load_inputs",
    "load_variants_file",
    "run_compare",
    "run_cost",
]

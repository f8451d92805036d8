"""Many runs: the same workload on several hardware configs or systems (``compare``), one
config over a parameter grid (``sweep``), load sweeps, and the pool that runs them.

- :func:`load_inputs` / :func:`load_variants_file` read the configs or a variants file;
- :func:`run_compare` runs everything and writes the results folder;
- :mod:`sim.studies.cost`, :mod:`sim.studies.saturation`, :mod:`sim.studies.sweep` each do
  one part (prices, the closed-form saturation point, the load sweep's points);
- :mod:`sim.studies.jobs` (one run as a unit of work), :mod:`sim.studies.cache` (finished
  runs in ``<study>/cache/``, keyed by config, inputs and code version, so a rerun makes
  only what is missing), :mod:`sim.studies.backends` (where runs execute: this process, a
  local pool, or a Dask cluster) and :mod:`sim.studies.progress` (done / running / failed
  and the time left, on stderr).
"""

from sim.studies.cost import cluster_price_per_hour, cost_per_million_tokens, run_cost
from sim.studies.runner import CompareResult, run_compare
from sim.studies.saturation import Saturation, analytic_saturation
from sim.studies.sweep import SweepSettings
from sim.studies.variants import CompareInputs, Variant, load_inputs, load_variants_file

__all__ = [
    "CompareInputs",
    "CompareResult",
    "Saturation",
    "SweepSettings",
    "Variant",
    "analytic_saturation",
    "cluster_price_per_hour",
    "cost_per_million_tokens",
    "load_inputs",
    "load_variants_file",
    "run_compare",
    "run_cost",
]

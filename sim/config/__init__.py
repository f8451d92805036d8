"""The config: YAML -> validated ``ExperimentConfig`` (strict, errors naming file, field
and line) and ``resolve()`` -> the engine's ``Experiment``, the only reader of its fields.
docs/config.md documents every field."""

from sim.config.errors import ConfigError, Issue
from sim.config.loader import (
    apply_overrides,
    config_from_dict,
    load_config,
    parse_assignment,
    with_overrides,
)
from sim.config.resolve import AnalysisSettings, analysis_settings, arrival_plan, resolve
from sim.config.schema import ExperimentConfig

__all__ = [
    "AnalysisSettings",
    "ConfigError",
    "ExperimentConfig",
    "Issue",
    "analysis_settings",
    "apply_overrides",
    "arrival_plan",
    "config_from_dict",
    "load_config",
    "parse_assignment",
    "resolve",
    "with_overrides",
]

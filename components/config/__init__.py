"""Typed run configuration, read once from params.yaml (and, for runtime settings, the environment).

One module per group of sections; this package re-exports their public names, so that
`from components.config import X` works for each of them:

- base: Section, the base of every section (unknown keys are errors)
- data: data:, split:            - model: model:, train:, adapt:     - peft: train.peft's settings
- sweep: sweep:                  - curve: curve:                     - distill: distill:
- evaluate: evaluate: (slices), robustness:, explain:               - gate: gate:
- export: export:                - serve: serve:                     - registry: registry:, approval:, schedule:
- monitor: drift:, monitor:      - privacy: privacy: (and the data.pii, serve.log_pii policies)
- params: Params, the task and its labels
- loading: reading params.yaml and the environment overrides (TUNEGATE_<SECTION>__<FIELD>)
- params_file: editing params.yaml in place; reference: the settings table; shipped: params.yaml vs the defaults
"""

from components.config.base import Section
from components.config.curve import CurveParams
from components.config.data import RESERVED_COLUMNS, DataParams, SplitParams, keep_columns_refusal
from components.config.distill import DistillParams
from components.config.evaluate import (
    SLICE_COLUMNS,
    SLICE_KINDS,
    EvaluateParams,
    ExplainParams,
    RobustnessParams,
    SliceSpec,
    slice_columns_refusal,
)
from components.config.export import EXPORT_PRECISIONS, ExportParams, resolve_export_precision
from components.config.gate import ROBUSTNESS_KINDS, ROBUSTNESS_TOKEN_KINDS, GateParams
from components.config.loading import ENV_PREFIX, ENV_SECTIONS, env_overrides, load_params, parse_params
from components.config.model import AdaptParams, ModelParams, TrainParams
from components.config.monitor import DriftParams, DriftThresholds, MonitorParams, parse_window
from components.config.params import (
    OUTSIDE_TAG,
    SEQUENCE_CLASSIFICATION,
    TOKEN_CLASSIFICATION,
    Params,
    Task,
    iob2_tags,
)
from components.config.peft import PROMPT_METHODS, LoraParams, PeftMethod, PromptParams
from components.config.privacy import LogPiiPolicy, PiiPolicy, PrivacyParams
from components.config.registry import ApprovalParams, RegistryParams, ScheduleParams, SigningParams
from components.config.serve import RayAutoscaling, ServeParams, ServiceSettings
from components.config.sweep import STUDENT_LOSS_KEYS, SWEEPABLE, SweepParams, is_sweepable

# Defined in a leaf module so that any family can raise it without importing the configuration.
from components.errors import ConfigError

__all__ = [
    "ENV_PREFIX", "ENV_SECTIONS", "EXPORT_PRECISIONS", "OUTSIDE_TAG", "PROMPT_METHODS", "RESERVED_COLUMNS",
    "ROBUSTNESS_KINDS", "ROBUSTNESS_TOKEN_KINDS", "SEQUENCE_CLASSIFICATION", "SLICE_COLUMNS", "SLICE_KINDS",
    "STUDENT_LOSS_KEYS", "SWEEPABLE", "TOKEN_CLASSIFICATION",
    "AdaptParams", "ApprovalParams", "ConfigError", "CurveParams", "DataParams", "DistillParams", "DriftParams",
    "DriftThresholds", "EvaluateParams", "ExplainParams", "ExportParams", "GateParams", "LoraParams",
    "LogPiiPolicy", "ModelParams", "MonitorParams", "Params", "PeftMethod", "PiiPolicy", "PrivacyParams", "PromptParams", "RayAutoscaling", "RegistryParams",
    "RobustnessParams", "ScheduleParams", "Section", "ServeParams", "ServiceSettings", "SigningParams",
    "SliceSpec", "SplitParams", "SweepParams", "Task", "TrainParams",
    "env_overrides", "iob2_tags", "is_sweepable", "keep_columns_refusal", "load_params", "parse_params",
    "parse_window", "resolve_export_precision", "slice_columns_refusal",
]

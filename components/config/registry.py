"""The model lifecycle's settings: the MLflow registry and signing (`registry:`), approval (`approval:`)
and scheduled retraining (`schedule:`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from components.config.base import Section


class SigningParams(Section):
    public_key: str | None = Field(
        default=None,
        description="The PEM public key (a path relative to the project) every loader and promotion checks a "
                    "version's signed manifest with; left out, signatures are not checked, only each file against "
                    "the manifest.")
    private_key_env: str = Field(
        default="TUNEGATE_SIGNING_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="The environment variable holding the private key (PEM text or a PEM file's path) that "
                    "registration signs with; if it is unset, versions are registered unsigned.")


class RegistryParams(Section):
    model_name: str = Field(default="tunegate-classifier", description="The registered model's name in the MLflow "
                                                                       "registry.")
    experiment: str = Field(default="tunegate", description="The MLflow experiment runs are recorded in.")
    tracking_uri: str | None = Field(
        default=None,
        description="The MLflow tracking URI, without a login (that goes in MLFLOW_TRACKING_USERNAME and "
                    "MLFLOW_TRACKING_PASSWORD); left out, MLFLOW_TRACKING_URI if set, else a SQLite file under "
                    "the project's mlflow/ folder.")
    signing: SigningParams = Field(default=SigningParams(), description="How versions are signed and checked.")
    require_signature: bool = Field(
        default=False,
        description="Refuse a version without a valid signature at serve, predict, pyfunc load and promotion; "
                    "false loads it with a warning, its files still checked against its manifest.")

    @model_validator(mode="after")
    def _a_required_signature_needs_a_key(self) -> RegistryParams:
        if self.require_signature and not self.signing.public_key:
            raise ValueError("registry.require_signature is true but registry.signing.public_key is not set: name the "
                             "PEM public key that versions are checked with (`tunegate keygen` makes a key pair)")
        return self

    @model_validator(mode="after")
    def _no_password_in_tracking_uri(self) -> RegistryParams:
        # params.yaml is committed, tracked by DVC and logged to every MLflow run: no place for a password.
        from components.redact import has_credentials, redact_uri

        if has_credentials(self.tracking_uri):
            raise ValueError(f"registry.tracking_uri carries a password ({redact_uri(self.tracking_uri)} with a login "
                             "in it): params.yaml is committed and logged to MLflow. Give the URI without the login "
                             "and put the login in MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
        return self


class ApprovalParams(Section):
    profile: Literal["local", "production"] = Field(
        default="local", description="local: a run that passed its gates approves itself (recorded as such); "
                                     "production: a person must approve or reject.")
    timeout_s: int = Field(default=24 * 3600, ge=1, description="Seconds a run waits for an answer; no answer by "
                                                                "then means rejected.")
    poll_interval_s: int = Field(default=2, ge=1, description="Seconds between a waiting run's checks for an "
                                                              "answer.")


class ScheduleParams(Section):
    deployment_name: str = Field(default="scheduled-retrain", description="The Prefect deployment of scheduled "
                                                                          "retraining.")
    cron: str = Field(default="0 3 * * *", description="When scheduled retraining runs, as a cron expression.")
    timezone: str = Field(default="UTC", description="The time zone the cron expression is read in.")
    when_running: Literal["wait", "skip"] = Field(
        default="skip", description="A run that finds another retraining in progress: skip ends at once and says "
                                    "so, wait queues behind it.")

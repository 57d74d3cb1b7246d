"""The environment every tunegate process and the services it starts run with: no telemetry, no progress bars
that bury an answer, patient start-ups. A leaf module: the CLI and the stack's services both read it."""

QUIET_DEFAULTS = {
    # No telemetry from a tool that may run on air-gapped machines (and Prefect's analytics
    # thread otherwise logs "database is locked" tracebacks on SQLite).
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
    # A registered model downloads in a second: MLflow's per-file bar only buries the command's answer.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # The run's own (ephemeral) Prefect server gets 20 s to start by default; on a busy 2-core machine
    # it took longer and the whole run died before its first step. A slow start is not an error.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}

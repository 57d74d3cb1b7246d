"""The Prefect flows: retraining, monitoring, sweeps, learning curves, approval and schedules."""

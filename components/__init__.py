"""tunegate's steps: plain Python with no Prefect inside, one sub-package per stage family (see README, Layout)."""

"""Great Expectations suites and row checks: the dataset, a new batch, quarantine, duplicates."""

"""Data: readers, ingest into batches, validation, drift, splits and tokenization."""

"""A model's life after training: gate, registry, signing, tracking, lineage, approval locks."""

"""The registry aliases that say what is live: `challenger` marks the newest version that passed its gates,
`champion` the version being served, `previous_champion` the one `champion` replaced (kept for rollback).
A leaf module: code that only names an alias (continual learning's starting point, say) need not import
the registry, so an edit to the registry does not make DVC retrain a model."""

CHALLENGER, CHAMPION, PREVIOUS_CHAMPION = "challenger", "champion", "previous_champion"

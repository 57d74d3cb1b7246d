"""Personal data in texts: find it (Presidio's pattern recognizers plus our own NER model) and redact it."""

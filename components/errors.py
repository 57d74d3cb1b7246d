"""Errors every family raises; a leaf module, so that raising one never imports the configuration."""


class ConfigError(ValueError):
    """Configuration that cannot work; the message says what to fix."""

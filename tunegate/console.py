"""What a person sees on the terminal: a user error (bad data, bad settings) is its message, never a
traceback. Prefect's console handler prints the traceback of every failed task and flow run; the
records themselves are untouched, so the flow's logs on the Prefect server keep them."""

from __future__ import annotations

import logging


class _UserErrorsWithoutTraceback(logging.Formatter):
    def __init__(self, inner: logging.Formatter, user_errors: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.inner = inner
        self.user_errors = user_errors

    def format(self, record: logging.LogRecord) -> str:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, self.user_errors):
            return self.inner.format(record)
        # Formatting caches the traceback text on the record, which every handler shares: hide it for
        # this handler alone and put it back for the others (the API handler sends it to the server).
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text = saved


def hide_user_error_tracebacks(user_errors: tuple[type[BaseException], ...]) -> None:
    """Wrap the formatter of every Prefect console handler configured now (call after Prefect has
    set up its logging, i.e. after a flow module is imported)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict.values()
                                       if isinstance(logger, logging.Logger)]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler) and not isinstance(handler.formatter,
                                                                             _UserErrorsWithoutTraceback):
                handler.setFormatter(_UserErrorsWithoutTraceback(handler.formatter or logging.Formatter(),
                                                                 user_errors))

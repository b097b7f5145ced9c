"""Errors a user sees: JupyterHub shows their message on the spawn form or the spawn page."""

from __future__ import annotations

from tornado import web


class OutpostError(web.HTTPError):
    """A failure whose message is meant for the user, as the portal or the Hub worded it.

    An HTTPError, so JupyterHub logs it without a traceback and relays it; ``jupyterhub_message``
    is what JupyterHub's ``format_exception`` shows on the spawn page.
    """

    def __init__(self, message: str, *, status_code: int = 400) -> None:
        super().__init__(status_code, log_message=message.replace("%", "%%"))
        self.message = message
        self.jupyterhub_message = message

    def __str__(self) -> str:
        return self.message


class InvalidOptions(OutpostError):
    """The user's choices (system, flavor, project) were rejected before any request left."""


class StartRefused(OutpostError):
    """The portal refused or failed the start; the message is the portal's."""


class StartCancelled(OutpostError):
    """The start was stopped (cancel, timeout, admin) before the server was ready."""


class OutpostUnreachable(OutpostError):
    """The portal could not be reached or kept answering 5xx after the retries.

    ``answered``: whether the last request sent got an HTTP answer (or none was sent). If
    not (a timeout, a dropped connection), the portal may have acted on it all the same.
    """

    def __init__(self, message: str, *, answered: bool = True) -> None:
        super().__init__(message, status_code=503)
        self.answered = answered

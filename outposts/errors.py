"""Errors the services raise; the API answers them with the contract's 419 shape."""


class PortalError(Exception):
    """A refusal or failure the client should see, with a message safe to show a user."""

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class StartRefused(PortalError):
    """Admission said no: flavor not allowed, a limit reached, or the Outpost not accepting.

    ``reason`` names which rule said no, in a word the metrics count refusals by
    (docs/monitoring.md lists them); the message is what the Hub's user reads.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class SpawnerFailed(PortalError):
    """The spawner could not start or stop the server."""


class TaskQueueUnavailable(Exception):
    """The task broker could not take a task (it is down or does not answer); the API
    answers 503 with Retry-After. The message says what became of the request."""

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__

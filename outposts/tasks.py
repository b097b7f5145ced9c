"""Lifecycle tasks. They take ids, tolerate deleted rows and are safe to run twice."""

from celery import shared_task


@shared_task
def server_start_task(server_id: int, tls_token: str | None = None) -> None:
    raise NotImplementedError  # filled in by the runner work


@shared_task
def server_stop_task(server_id: int) -> None:
    raise NotImplementedError


@shared_task
def hub_forward_event(event_id: int) -> None:
    raise NotImplementedError

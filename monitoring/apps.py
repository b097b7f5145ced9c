from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Health and metrics"

    def ready(self) -> None:
        # Carries the request and start ids, and the time a task was queued, in every task
        # message (monitoring/logcontext.py, monitoring/queues.py).
        from monitoring import signals  # noqa: F401

from django.apps import AppConfig


class OutpostsConfig(AppConfig):
    name = "outposts"
    verbose_name = "Outposts and servers"

    def ready(self) -> None:
        from outposts import checks  # noqa: F401  (registers the system checks)

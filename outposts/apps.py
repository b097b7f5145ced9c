from django.apps import AppConfig


class OutpostsConfig(AppConfig):
    name = "outposts"
    verbose_name = "Outposts and servers"

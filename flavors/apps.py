from django.apps import AppConfig


class FlavorsConfig(AppConfig):
    name = "flavors"
    verbose_name = "Flavors and admission"

from django.apps import AppConfig


class FlavorsConfig(AppConfig):
    name = "flavors"
    verbose_name = "Flavors and admission"

    def ready(self) -> None:
        from flavors import terms

        terms.connect_receivers()

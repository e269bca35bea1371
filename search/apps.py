from django.apps import AppConfig


class SearchConfig(AppConfig):
    """Everything that reads for shoppers and API clients: ranking, selectors, APIs, pages."""

    name = "search"

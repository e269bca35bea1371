from django.apps import AppConfig


class SearchConfig(AppConfig):
    """Everything that reads for shoppers and API clients: ranking, selectors, APIs, pages."""

    name = "search"

    def ready(self):
        # Imported here: models are not ready when this module loads.
        from django.db.models.signals import post_delete

        from catalog.models import Product
        from catalog.signals import catalog_changed
        from embeddings.signals import candidate_held
        from search.services import interleaving_on_candidate_held
        from search.vocabulary import vocabulary_on_catalog_change, vocabulary_on_product_delete

        # The vocabulary and suggestions follow the catalog: changed products are
        # recounted once their transaction commits, deleted ones taken back.
        catalog_changed.connect(vocabulary_on_catalog_change, dispatch_uid="search-vocabulary")
        post_delete.connect(
            vocabulary_on_product_delete, sender=Product, dispatch_uid="search-vocabulary"
        )
        # A candidate that fine-tuning held for an online test is tested here.
        candidate_held.connect(interleaving_on_candidate_held, dispatch_uid="search-interleaving")

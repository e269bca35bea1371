from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_default_space(using, **kwargs) -> None:
    from django.conf import settings
    from django.db import connections

    from embeddings.models import EmbeddingSpace
    from embeddings.spaces import space_ensure_default

    if not settings.EMBEDDINGS_DEFAULT_SPACE_ON_MIGRATE:
        return
    # Not after migrating the app back to zero: its tables are gone then.
    if EmbeddingSpace._meta.db_table in connections[using].introspection.table_names():
        space_ensure_default()


class EmbeddingsConfig(AppConfig):
    name = "embeddings"

    def ready(self):
        # Imported here: models are not ready when this module loads.
        from catalog.signals import catalog_changed
        from embeddings.services import embeddings_on_catalog_change

        catalog_changed.connect(embeddings_on_catalog_change, dispatch_uid="embeddings")
        # A new install (and every test database) gets its first space from settings.
        post_migrate.connect(_ensure_default_space, sender=self, dispatch_uid="default-space")

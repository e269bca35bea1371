from django.contrib import admin

from embeddings.models import EmbeddingSpace


@admin.register(EmbeddingSpace)
class EmbeddingSpaceAdmin(admin.ModelAdmin):
    list_display = ["name", "architecture", "source", "embed_dim", "status", "created"]
    list_filter = ["status", "source"]
    readonly_fields = [f.name for f in EmbeddingSpace._meta.fields]

    def has_add_permission(self, request):
        # Spaces come from settings, training, or reindexing, never from a hand-made form.
        return False

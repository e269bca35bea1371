"""The synonym sets' admin: terms typed on one line, saved through synonym_set_save."""

import re

from django import forms
from django.contrib import admin

from search.models import SynonymSet
from search.synonyms import synonym_set_save, synonym_sets_set_enabled
from search.terms import term_key


class TermsField(forms.CharField):
    """Terms typed as one line, separated by commas (also Chinese ones: “，”)."""

    def prepare_value(self, value):
        return ", ".join(value) if isinstance(value, list | tuple) else value

    def to_python(self, value):
        text = super().to_python(value) or ""
        return [term.strip() for term in re.split("[,，、]", text) if term.strip()]


class SynonymSetForm(forms.ModelForm):
    terms = TermsField(
        max_length=2000,
        help_text="comma-separated, e.g. “tee, t-shirt” (two-way), or “handbag, backpack” "
        "with “bag” as the one-way root",
    )

    class Meta:
        model = SynonymSet
        fields = ["root", "terms", "enabled"]


@admin.register(SynonymSet)
class SynonymSetAdmin(admin.ModelAdmin):
    """Synonym sets: saved through synonym_set_save; a set needs two terms (or a root and one)."""

    form = SynonymSetForm
    list_display = ["synonyms", "direction", "enabled", "updated"]
    list_filter = ["enabled"]
    search_fields = ["root"]
    actions = ["enable", "disable"]

    @admin.display(description="Synonyms")
    def synonyms(self, obj):
        return str(obj)

    @admin.display(description="Direction")
    def direction(self, obj):
        return f"one-way from “{obj.root}”" if obj.root else "two-way"

    def get_search_results(self, request, queryset, search_term):
        found, duplicates = super().get_search_results(request, queryset, search_term)
        if search_term:  # a term, in the sets the list's filters left
            found |= queryset.filter(terms__contains=[term_key(search_term)])
        return found, duplicates

    def save_model(self, request, obj, form, change):
        synonym_set_save(synonym_set=obj)

    @admin.action(description="Enable the selected synonym sets")
    def enable(self, request, queryset):
        count = synonym_sets_set_enabled(
            synonym_set_ids=queryset.values_list("pk", flat=True), enabled=True
        )
        self.message_user(request, f"{count} synonym set(s) enabled.")

    @admin.action(description="Disable the selected synonym sets")
    def disable(self, request, queryset):
        count = synonym_sets_set_enabled(
            synonym_set_ids=queryset.values_list("pk", flat=True), enabled=False
        )
        self.message_user(request, f"{count} synonym set(s) disabled.")

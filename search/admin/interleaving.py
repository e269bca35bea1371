"""The interleaving tests' admin: adding one starts it; stop or promote its candidate."""

from django import forms
from django.contrib import admin
from django.http import HttpResponseRedirect
from django.urls import reverse

from embeddings.models import EmbeddingSpace
from search.interleaving import (
    InterleavingError,
    interleaving_test_promote,
    interleaving_test_stop,
    interleaving_test_tally,
)
from search.models import InterleavingTest
from search.services import interleaving_test_start


class InterleavingTestStartForm(forms.ModelForm):
    """Adding a test starts it: a candidate space against the active one."""

    class Meta:
        model = InterleavingTest
        fields = ["candidate"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["candidate"].queryset = EmbeddingSpace.objects.filter(
            status=EmbeddingSpace.Status.CANDIDATE
        ).order_by("-created")
        self.fields["candidate"].help_text = (
            "a candidate space (a fine-tune's result); it is filled and indexed first if it "
            "was not, then SEARCH_INTERLEAVE_FRACTION of text searches merge its ranking with "
            "the active space's"
        )


@admin.register(InterleavingTest)
class InterleavingTestAdmin(admin.ModelAdmin):
    list_display = ["__str__", "status", "started", "ended", "tally", "p_value"]
    list_filter = ["status"]
    readonly_fields = [
        "candidate",
        "control",
        "status",
        "created",
        "started",
        "ended",
        "tally",
        "p_value",
        "decision",
    ]
    exclude = ["result"]
    actions = ["stop", "promote"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = InterleavingTestStartForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request, obj=None):
        return ["candidate"] if obj is None else self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        # The service creates the row (one test at a time, under a lock); the admin then
        # shows that row.
        try:
            test = interleaving_test_start(candidate=form.cleaned_data["candidate"])
        except InterleavingError as exc:
            raise forms.ValidationError(str(exc)) from exc
        obj.pk = test.pk
        obj.refresh_from_db()

    def add_view(self, request, form_url="", extra_context=None):
        try:
            return super().add_view(request, form_url, extra_context)
        except forms.ValidationError as exc:
            self.message_user(request, exc.messages[0], level="error")
            return HttpResponseRedirect(reverse("admin:search_interleavingtest_changelist"))

    def _tally(self, obj):
        # One aggregate per test and page, for both columns.
        if not hasattr(obj, "_tally"):
            obj._tally = interleaving_test_tally(obj)
        return obj._tally

    @admin.display(description="searches · wins · ties")
    def tally(self, obj):
        tally = self._tally(obj)
        return (
            f"{tally.searches} searches, {tally.decided} sessions with clicks · candidate "
            f"{tally.candidate_wins}, active {tally.control_wins} · {tally.ties} ties"
        )

    @admin.display(description="sign test p")
    def p_value(self, obj):
        return f"{self._tally(obj).p_value:.4f}"

    @admin.action(description="Stop the selected tests (the candidate stays a candidate)")
    def stop(self, request, queryset):
        for test in queryset.filter(status__in=InterleavingTest.UNFINISHED):
            interleaving_test_stop(test=test, decision=f"stopped by {request.user}")
            self.message_user(request, f"Stopped the test of {test.candidate}.")

    @admin.action(description="Promote the selected tests' candidates now")
    def promote(self, request, queryset):
        for test in queryset.filter(status=InterleavingTest.Status.RUNNING):
            interleaving_test_promote(
                test=test,
                decision=f"promoted by {request.user}; {interleaving_test_tally(test)}",
            )
            if test.candidate_ranker_id:
                self.message_user(request, f"{test.candidate_ranker} is the live ranker now.")
            else:
                self.message_user(request, f"Activating {test.candidate} (filled, then switched).")

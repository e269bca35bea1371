"""`{{ text|shopper_text }}`: a shopper's text (a query) as staff read it in the admin."""

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

from catalog.text import text_printable

register = template.Library()


@register.filter
def shopper_text(text: str) -> SafeString:
    """Escaped, without control or bidi characters, and isolated in a `<bdi>` (class
    "shopper-text", search/static/search/shopper-text.css) so that right-to-left text
    cannot reorder the cell around it, and a long unbroken one wraps instead of widening
    the page."""
    return format_html('<bdi class="shopper-text">{}</bdi>', text_printable(str(text)))

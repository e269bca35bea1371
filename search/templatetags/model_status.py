"""`{% model_warmup as warmup %}`: why photo features wait (search/_model_status.html)."""

from django import template

from embeddings.selectors import model_warmup as model_warmup_read

register = template.Library()


@register.simple_tag
def model_warmup():
    return model_warmup_read()

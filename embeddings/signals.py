"""The embeddings app's seam to the search app: signals, no imports of it.

`candidate_held` is sent (outside any transaction) when a fine-tune's candidate passed the
offline gates and, because SEARCH_INTERLEAVE_FRACTION > 0, was filled and indexed but
left a candidate, with `space`. A receiver (search.interleaving) starts an online test
with it and returns True, or returns False when it cannot (another test is running).
"""

from django.dispatch import Signal

candidate_held = Signal()

"""The search app's admin, one module per concern (Django autodiscovers this package):
products (the catalog's product admin with the image-vs-title flag), synonyms,
merchandising (rules with their pins, hides, boosts and a preview), interleaving (tests of
a candidate space) and searchlog (the read-only search log and its insights page).
"""

# Imported to register their admins.
from search.admin import interleaving, merchandising, products, searchlog, synonyms  # noqa: F401

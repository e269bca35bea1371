"""The search app's admin, one module per concern (Django autodiscovers this package):
products (the catalog's product admin with the image-vs-title flag), synonyms,
merchandising (rules with their pins, hides, boosts and a preview), interleaving (tests of
a candidate space), rankers (learned rankers: report, make live, roll back) and searchlog
(the read-only search log and its insights page).
"""

# Imported to register their admins.
from search.admin import (  # noqa: F401
    interleaving,
    merchandising,
    products,
    rankers,
    searchlog,
    synonyms,
)

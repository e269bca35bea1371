"""The catalog's one seam to the apps built on it (embeddings): a signal, no imports of them.

`catalog_changed` is sent inside the transaction that changed the catalog, with
`image_ids` (new or replaced photos, and the photos of a product made active again) and
`product_ids` (new products, changed texts: title, description, attributes, brand,
category, SKU; or a changed status). Only active products are shown to shoppers: a
receiver reads each product's status, never assumes it.
A receiver that acts outside the database (queuing a task) defers that to
`transaction.on_commit`, so nothing runs for a change that is rolled back.
"""

from collections.abc import Iterable

from django.dispatch import Signal

catalog_changed = Signal()


def catalog_changed_send(*, image_ids: Iterable[int] = (), product_ids: Iterable[int] = ()) -> None:
    image_ids, product_ids = sorted(set(image_ids)), sorted(set(product_ids))
    if image_ids or product_ids:
        catalog_changed.send(sender=None, image_ids=image_ids, product_ids=product_ids)

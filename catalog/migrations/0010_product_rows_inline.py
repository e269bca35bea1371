from django.db import migrations


class Migration(migrations.Migration):
    """Product rows up to a page stay whole in the table: past the default 2 KB, PostgreSQL
    moves the largest values (the search document) to the TOAST table, and every word
    match then reads three more pages per product (bench/variants.py: a product's variant
    summary took most rows past 2 KB). Existing rows move back when next written, or at
    once with VACUUM FULL catalog_product (docs/operations.md)."""

    dependencies = [("catalog", "0009_product_variant_offers")]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE catalog_product SET (toast_tuple_target = 8160)",
            "ALTER TABLE catalog_product RESET (toast_tuple_target)",
        )
    ]

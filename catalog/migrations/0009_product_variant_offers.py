from django.db import migrations, models

# catalog.services.VARIANT_OFFERS_UPDATE as it was, for every product with variants.
OFFERS_FILL = """
UPDATE catalog_product p SET variant_offers = o.offers
FROM (SELECT product_id,
             coalesce(jsonb_agg(jsonb_build_object('p', price, 's', in_stock,
                                                   'k', to_jsonb(option_keys))
                                ORDER BY position, id) FILTER (WHERE active), '[]') AS offers
      FROM catalog_productvariant GROUP BY product_id) o
WHERE p.id = o.product_id
"""


class Migration(migrations.Migration):
    dependencies = [("catalog", "0008_variants_facets_status")]

    operations = [
        migrations.AddField(
            model_name="product",
            name="variant_offers",
            field=models.JSONField(blank=True, db_default=[], default=list, editable=False),
        ),
        migrations.RunSQL(OFFERS_FILL, migrations.RunSQL.noop),
    ]

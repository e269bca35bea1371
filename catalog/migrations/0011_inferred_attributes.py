"""Attributes read from photos (issue #23): InferredAttribute rows to review, a threshold per
facet above which they count unreviewed, and Product.inferred_attributes, the accepted ones.

The generated `facet_keys` now read `inferred_attributes || attributes`: the product's own
values win (jsonb `||` keeps the right side's key), so a filter or facet count finds an
accepted inferred value only where nothing was entered.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def facet_keys_sql(attributes: str) -> list[str]:
    return [
        "DROP INDEX IF EXISTS catalog_product_facet_keys",
        "ALTER TABLE catalog_product DROP COLUMN facet_keys",
        "ALTER TABLE catalog_product ADD COLUMN facet_keys text[] GENERATED ALWAYS AS "
        f"(shop_search_facet_keys({attributes}, options)) STORED",
        "CREATE INDEX catalog_product_facet_keys ON catalog_product USING gin (facet_keys)",
    ]


# Not an object (an import's odd row): its keys are the function's own business, as before.
WITH_INFERRED = (
    "CASE WHEN jsonb_typeof(attributes) = 'object' AND jsonb_typeof(inferred_attributes) = "
    "'object' THEN inferred_attributes || attributes ELSE attributes END"
)


class Migration(migrations.Migration):

    dependencies = [
        ('catalog', '0010_product_rows_inline'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='facet',
            name='inferred_threshold',
            field=models.FloatField(blank=True, help_text='a value read from photos at least this sure (0..1) counts as entered without review; empty: only values confirmed in the admin count', null=True),
        ),
        migrations.AddField(
            model_name='product',
            name='inferred_attributes',
            field=models.JSONField(blank=True, db_default={}, default=dict, editable=False),
        ),
        migrations.CreateModel(
            name='InferredAttribute',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(help_text='the attribute, e.g. "colour"', max_length=100)),
                ('value', models.CharField(max_length=200)),
                ('confidence', models.FloatField(help_text="the model's calibrated probability, 0..1")),
                ('status', models.CharField(choices=[('suggested', 'Suggested'), ('confirmed', 'Confirmed'), ('rejected', 'Rejected')], db_index=True, default='suggested', max_length=10)),
                ('space', models.CharField(help_text='the embedding space that read it', max_length=120)),
                ('created', models.DateTimeField(auto_now_add=True)),
                ('updated', models.DateTimeField(auto_now=True)),
                ('product', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='inferred', to='catalog.product')),
                ('reviewed_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'ordering': ['-confidence', 'id'],
                'constraints': [models.UniqueConstraint(fields=('product', 'name'), name='catalog_inferred_unique')],
            },
        ),
        migrations.RunSQL(facet_keys_sql(WITH_INFERRED), facet_keys_sql("attributes")),
    ]

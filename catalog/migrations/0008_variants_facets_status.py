"""Variants, facets and product status (the real-catalogs issue).

- ProductVariant: a product's buyable versions (options, SKU, price, stock, photo);
  Product.options summarises their option names and values, Product.price_max and
  compare_at_price their prices.
- Product.status: draft and archived products are kept but not searchable: their search
  document is empty (and the embeddings app keeps no vectors of them).
- Option values are words of the product (weight B, as brands), so "red dress" finds the
  dress sold in red.
- Facet keys, lower case, for filters by attribute or option: "size", "size=m" (a generated
  array on products, GIN-indexed, from attributes and options, with each option value
  alone, "=m", for query understanding; and on variants, from their option values), so
  `attr.size=m` is an index lookup and an array test on one variant.
- Facet and FacetValueAlias: which options and attributes are facets, and other names of
  their values.
"""

import importlib

import django.db.models.deletion
import django.db.models.functions.text
from django.db import migrations, models

previous = importlib.import_module("catalog.migrations.0006_search_document_fold_compounds_words")


def functions_sql(schema: str) -> str:
    return rf"""
-- The facet keys of attributes (an object: {{"material": "Cotton", "tags": ["a", "b"]}}) and
-- options ([{{"name": "Size", "values": ["S", "M"]}}]): each name, and name=value, in lower case.
CREATE OR REPLACE FUNCTION {schema}.shop_search_facet_keys(attributes jsonb, options jsonb)
RETURNS text[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  WITH named AS (
    SELECT a.key AS name, a.value
    FROM jsonb_each(CASE WHEN jsonb_typeof(attributes) = 'object' THEN attributes
                         ELSE '{{}}'::jsonb END) a
    WHERE a.key NOT IN ('titles', 'category_path_zh')
    UNION ALL
    SELECT o ->> 'name', o -> 'values'
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(options) = 'array' THEN options
                                   ELSE '[]'::jsonb END) o
    WHERE jsonb_typeof(o) = 'object' AND o ? 'name'
  ), pairs AS (
    SELECT lower(trim(name)) AS name, lower(trim(v #>> '{{}}')) AS value
    FROM named, jsonb_array_elements(CASE WHEN jsonb_typeof(value) = 'array' THEN value
                                          ELSE jsonb_build_array(value) END) v
    WHERE jsonb_typeof(v) IN ('string', 'number', 'boolean')
  )
  SELECT coalesce(array_agg(DISTINCT k), '{{}}')
  FROM (
    SELECT name AS k FROM pairs
    UNION ALL SELECT name || '=' || value FROM pairs
    -- Option values alone ("=red"): a query word that is one is found by one index probe.
    UNION ALL
    SELECT '=' || lower(trim(v)) FROM jsonb_array_elements(
        CASE WHEN jsonb_typeof(options) = 'array' THEN options ELSE '[]'::jsonb END) o,
      jsonb_array_elements_text(CASE WHEN jsonb_typeof(o -> 'values') = 'array'
                                     THEN o -> 'values' ELSE '[]'::jsonb END) v
  ) keys
  WHERE k <> '' AND k <> '='
$fn$;

-- The option values of a product, as its words at weight B (as brands) with their stems.
CREATE OR REPLACE FUNCTION {schema}.shop_search_option_document(options jsonb)
RETURNS tsvector LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  SELECT setweight(to_tsvector('pg_catalog.simple'::regconfig,
                               {schema}.shop_search_tokens(t, true)), 'B')
         || {schema}.shop_search_stems(t, 'B')
  FROM (SELECT coalesce(string_agg(v #>> '{{}}', ' '), '') AS t
        FROM jsonb_array_elements(CASE WHEN jsonb_typeof(options) = 'array' THEN options
                                       ELSE '[]'::jsonb END) o,
             jsonb_array_elements(CASE WHEN jsonb_typeof(o -> 'values') = 'array'
                                       THEN o -> 'values' ELSE '[]'::jsonb END) v) values_text
$fn$;
"""


def document_expression(schema: str) -> str:
    return (
        f"CASE WHEN status = 'active' THEN "
        f"{schema}.product_search_document(title, description, brand, sku, attributes) "
        f"|| {schema}.shop_search_option_document(options) ELSE ''::tsvector END"
    )


def _schema(cursor, schema_editor) -> str:
    cursor.execute("SELECT current_schema()")
    return schema_editor.quote_name(cursor.fetchone()[0])


def forward(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        schema = _schema(cursor, schema_editor)
        cursor.execute(functions_sql(schema))
        previous.rewrite_documents(cursor, schema, document_expression(schema))
        cursor.execute(
            "ALTER TABLE catalog_product ADD COLUMN facet_keys text[] GENERATED ALWAYS AS "
            f"({schema}.shop_search_facet_keys(attributes, options)) STORED"
        )
        cursor.execute(
            "CREATE INDEX catalog_product_facet_keys ON catalog_product USING gin (facet_keys)"
        )
        cursor.execute(
            "ALTER TABLE catalog_productvariant ADD COLUMN option_keys text[] GENERATED ALWAYS "
            f"AS ({schema}.shop_search_facet_keys(options, '[]'::jsonb)) STORED"
        )


def backward(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        schema = _schema(cursor, schema_editor)
        cursor.execute("ALTER TABLE catalog_productvariant DROP COLUMN option_keys")
        cursor.execute("ALTER TABLE catalog_product DROP COLUMN facet_keys")
        previous.rewrite_documents(cursor, schema)
        cursor.execute(f"DROP FUNCTION {schema}.shop_search_option_document(jsonb)")
        cursor.execute(f"DROP FUNCTION {schema}.shop_search_facet_keys(jsonb, jsonb)")


class Migration(migrations.Migration):
    dependencies = [("catalog", "0007_category_names_search_word_forms")]

    operations = [
        migrations.AddField(
            model_name="product",
            name="price_max",
            field=models.DecimalField(
                blank=True, decimal_places=2, editable=False, max_digits=12, null=True,
                help_text="the highest price of its variants (none without variants)",
            ),
        ),
        migrations.AddField(
            model_name="product",
            name="compare_at_price",
            field=models.DecimalField(
                blank=True, decimal_places=2, max_digits=12, null=True,
                help_text="the price before a sale, shown struck through",
            ),
        ),
        migrations.AddField(
            model_name="product",
            name="status",
            field=models.CharField(
                choices=[
                    ("active", "active (searchable)"),
                    ("draft", "draft (kept, not searchable)"),
                    ("archived", "archived (kept, not searchable)"),
                ],
                default="active",
                max_length=10,
            ),
        ),
        migrations.AddField(
            model_name="product",
            name="options",
            field=models.JSONField(blank=True, default=list, editable=False),
        ),
        migrations.AlterField(
            model_name="importjob",
            name="format",
            field=models.CharField(
                choices=[
                    ("csv", "CSV (+ ZIP of images)"),
                    ("tsv", "TSV: text<TAB>base64 image"),
                    ("jsonl", "JSON Lines"),
                    ("shopify", "Shopify product CSV export"),
                    ("woocommerce", "WooCommerce product CSV export"),
                ],
                max_length=16,
            ),
        ),
        migrations.CreateModel(
            name="Facet",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(help_text='the option or attribute, e.g. "Size", "material"', max_length=100, unique=True)),
                ("label", models.CharField(blank=True, help_text="shown; the name if empty", max_length=100)),
                ("position", models.PositiveSmallIntegerField(default=0)),
            ],
            options={"ordering": ["position", "name"]},
        ),
        migrations.CreateModel(
            name="FacetValueAlias",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("alias", models.CharField(max_length=100)),
                ("value", models.CharField(help_text="the value it is another name for", max_length=100)),
                ("facet", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="aliases", to="catalog.facet")),
            ],
            options={
                "ordering": ["facet", "value", "alias"],
                "verbose_name_plural": "facet value aliases",
                "constraints": [
                    models.UniqueConstraint(
                        django.db.models.functions.text.Lower("alias"), models.F("facet"),
                        name="catalog_facet_alias_unique",
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="ProductVariant",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("sku", models.CharField(max_length=64, unique=True, verbose_name="SKU")),
                ("options", models.JSONField(default=dict, help_text='its option values: {"Size": "M"}')),
                ("price", models.DecimalField(decimal_places=2, max_digits=12)),
                ("compare_at_price", models.DecimalField(blank=True, decimal_places=2, max_digits=12, null=True)),
                ("stock", models.IntegerField(blank=True, help_text="empty: not tracked", null=True)),
                ("in_stock", models.BooleanField(default=True)),
                ("barcode", models.CharField(blank=True, max_length=64)),
                ("position", models.PositiveSmallIntegerField(default=0)),
                ("active", models.BooleanField(default=True, help_text="off: no longer sold (gone from the shop's file); kept for history")),
                ("created", models.DateTimeField(auto_now_add=True)),
                ("updated", models.DateTimeField(auto_now=True)),
                ("image", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="variants", to="catalog.productimage")),
                ("product", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="variants", to="catalog.product")),
            ],
            options={"ordering": ["product_id", "position", "id"]},
        ),
        migrations.RunPython(forward, backward),
    ]

"""Word forms and category names for search (the relevance issue).

- Category.names: a category's name in other languages ({"zh": "连衣裙"}).
- English word forms: product documents also store the Snowball English stems (shipped
  with Postgres) of the words of titles (weight A) and descriptions (D), so "dresses",
  "dress" and "puppies"/"puppy" meet. Stems are marked ("~dress") so that they meet only
  stems, never a word or a prefix ("stripped" stems to "strip", a prefix of "striped").
  Brands and SKUs are never stemmed.
- Categories get two generated documents: `search_names` (every word of the name and its
  translations, with stems) and `search_heads` (the head nouns only: the last word of each
  part of "Coats & Jackets", and whole translated names). A query word matches the
  products of every category whose names contain it; it *names* a category (and may
  narrow the search to it) only when it is a head: "leather" does not name "Leather Shoes".
- Brands are looked up by their words (shop_search_brand_key, indexed): a query that names
  a brand is understood as that brand.
- product_search_term(forms): what one query word matches: any of its forms (as typed,
  corrected) as product_search_query matches it, or its English stem.

Rewriting the product documents costs what 0006 measured (about 1 ms a product).
"""

import importlib

from django.db import migrations, models

previous = importlib.import_module("catalog.migrations.0006_search_document_fold_compounds_words")
CJK = previous.CJK


def functions_sql(schema: str) -> str:
    return rf"""
-- The English stems of the Latin words of `t` (CJK runs left out), marked "~" so that a
-- stem meets only stems, never a word or a prefix of the same letters, at weight `w`.
CREATE OR REPLACE FUNCTION {schema}.shop_search_stems(t text, w "char")
RETURNS tsvector LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  SELECT coalesce(string_agg(
           quote_literal('~' || replace(lexeme, chr(92), '')) || ':1' || w::text, ' '
         ), '')::tsvector
  FROM unnest(tsvector_to_array(to_tsvector('pg_catalog.english'::regconfig,
         regexp_replace({schema}.shop_search_fold(t), '[{CJK}]+', ' ', 'g')))) lexeme
$fn$;

CREATE OR REPLACE FUNCTION {schema}.product_search_document(
  title text, description text, brand text, sku text, attributes jsonb
) RETURNS tsvector LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  SELECT setweight(to_tsvector('pg_catalog.simple'::regconfig, {schema}.shop_search_tokens(
             coalesce(title, '') || ' ' || coalesce(sku, '') || ' '
             || jsonb_path_query_array(attributes, 'lax $.titles.*')::text, true)), 'A')
      || setweight(to_tsvector('pg_catalog.simple'::regconfig,
                               {schema}.shop_search_tokens(brand, true)), 'B')
      || setweight(to_tsvector('pg_catalog.simple'::regconfig, {schema}.shop_search_suffixes(
             coalesce(title, '') || ' ' || coalesce(brand, ''))), 'C')
      || setweight(to_tsvector('pg_catalog.simple'::regconfig,
                               {schema}.shop_search_tokens(description, false)), 'D')
      || {schema}.shop_search_stems(coalesce(title, '') || ' '
             || jsonb_path_query_array(attributes, 'lax $.titles.*')::text, 'A')
      || {schema}.shop_search_stems(description, 'D')
$fn$;

-- A text as a category document: its words (CJK by characters and pairs) and stems.
CREATE OR REPLACE FUNCTION {schema}.shop_search_name_document(t text)
RETURNS tsvector LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  SELECT to_tsvector('pg_catalog.simple'::regconfig, {schema}.shop_search_tokens(t, false))
      || {schema}.shop_search_stems(t, 'A')
$fn$;

-- The head nouns of a category name: the last word of each part of a list
-- ("Coats & Jackets" -> coats jackets, "Leather Shoes" -> shoes).
CREATE OR REPLACE FUNCTION {schema}.shop_search_heads(name text)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  SELECT coalesce(string_agg(regexp_replace(trim(part), '^.*\s', ''), ' '), '')
  FROM regexp_split_to_table({schema}.shop_search_fold(name),
                             '\s*(?:&|,|/|\+|\mand\M)\s*') part
  WHERE trim(part) <> ''
$fn$;

-- What one query word matches: each of its forms as product_search_query matches it
-- (prefixes, CJK pairs), or all the marked English stems of a Latin form ("t-shirts":
-- ~t-shirt and ~shirt). NULL: nothing to match.
CREATE OR REPLACE FUNCTION {schema}.product_search_term(forms text[])
RETURNS tsquery LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  SELECT string_agg('(' || x::text || ')', ' | ')::tsquery
  FROM (
    SELECT {schema}.product_search_query(f, false) AS x FROM unnest(forms) f
    UNION ALL
    SELECT (SELECT string_agg(quote_literal(lexeme), ' & ')
            FROM unnest(tsvector_to_array({schema}.shop_search_stems(f, 'A'))) lexeme)::tsquery
    FROM unnest(forms) f
    WHERE f !~ '[{CJK}]'
  ) q
  WHERE x IS NOT NULL AND numnode(x) > 0
$fn$;

-- A brand compared by its words: "Maple & Moss" -> "maple moss" (indexed: the query's
-- runs of words are looked up among the brands by it).
CREATE OR REPLACE FUNCTION {schema}.shop_search_brand_key(brand text)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  SELECT trim(regexp_replace({schema}.shop_search_fold(brand), '[^[:alnum:]]+', ' ', 'g'))
$fn$;

-- An English stop word ("a", "for", "my"): its stems are empty.
CREATE OR REPLACE FUNCTION {schema}.shop_search_is_stop_word(w text)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  SELECT {schema}.shop_search_fold(w) ~ '^[a-z]+$'
         AND numnode(plainto_tsquery('pg_catalog.english'::regconfig,
                                     {schema}.shop_search_fold(w))) = 0
$fn$;
"""


def category_columns_sql(schema: str) -> str:
    translations = "jsonb_path_query_array(names, 'lax $.*')"
    return f"""
ALTER TABLE catalog_category ADD COLUMN search_names tsvector GENERATED ALWAYS AS (
  {schema}.shop_search_name_document(name || ' ' || {translations}::text)) STORED;
ALTER TABLE catalog_category ADD COLUMN search_heads tsvector GENERATED ALWAYS AS (
  {schema}.shop_search_name_document({schema}.shop_search_heads(name) || ' '
                                     || {translations}::text)) STORED;
"""


def forward(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        schema = schema_editor.quote_name(cursor.fetchone()[0])
        cursor.execute(functions_sql(schema))
        previous.rewrite_documents(cursor, schema)
        cursor.execute(category_columns_sql(schema))
        cursor.execute(
            "CREATE INDEX catalog_product_brand_key ON catalog_product "
            f"({schema}.shop_search_brand_key(brand)) WHERE brand <> ''"
        )


def backward(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        schema = schema_editor.quote_name(cursor.fetchone()[0])
        cursor.execute("DROP INDEX catalog_product_brand_key")
        cursor.execute("ALTER TABLE catalog_category DROP COLUMN search_names")
        cursor.execute("ALTER TABLE catalog_category DROP COLUMN search_heads")
        cursor.execute(previous.functions_sql(schema))
        previous.rewrite_documents(cursor, schema)
        for function in (
            "shop_search_is_stop_word(text)",
            "shop_search_brand_key(text)",
            "product_search_term(text[])",
            "shop_search_heads(text)",
            "shop_search_name_document(text)",
            'shop_search_stems(text, "char")',
        ):
            cursor.execute(f"DROP FUNCTION {schema}.{function}")


class Migration(migrations.Migration):
    dependencies = [("catalog", "0006_search_document_fold_compounds_words")]

    operations = [
        migrations.AddField(
            model_name="category",
            name="names",
            field=models.JSONField(
                blank=True, default=dict, help_text='e.g. {"zh": "连衣裙"}',
                verbose_name="translated names",
            ),
        ),
        migrations.RunPython(forward, backward),
    ]

"""Full-text search of products, with n-grams made in SQL instead of pg_trgm.

The embedded server ships no pg_trgm, so the n-grams are made here, for both sides:
- a product's document: the words of its title, translated titles and SKU (weight A),
  brand (B) and description (D). Title, brand and SKU words also give their prefixes
  ("striped" -> s st str stri strip stripe), and hyphenated title and brand words are
  also joined ("t-shirt" -> tshirt). Every CJK run gives its characters and its
  overlapping character pairs ("红色条纹" -> 红 色 条 纹 红色 色条 条纹), since the
  'simple' parser keeps a CJK run as one token.
- a query: every word and every CJK character must be in the document (AND), each as an
  exact lexeme: prefixes are stored, because a GIN prefix search (`red:*`) costs ~10x an
  exact one. For ranking, the query's CJK character pairs count too, so adjacent
  characters rank first.

The document is a STORED generated column: Postgres computes it on every write path
(admin, services, bulk_create upserts; ~0.2 ms a product) and ranking reads it instead of
recomputing it. The ORM does not know the column, so loading products never pays for it.
Function calls are schema-qualified so that a pg_dump restore (empty search_path) can
recompute the column.
"""

from django.db import migrations

CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
# Longer words store their first 15 characters as a prefix, and a longer query word
# looks for those too.
PREFIX_MAX = 15


def functions_sql(schema: str) -> str:
    return rf"""
-- The text a field is indexed as, for the 'simple' parser: words split at punctuation,
-- with `short` (titles, brand, SKU) their prefixes and joined compounds, and CJK
-- characters and character pairs.
CREATE OR REPLACE FUNCTION {schema}.shop_search_tokens(t text, short boolean)
RETURNS text LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
DECLARE
  latin text := lower(coalesce(t, ''));
  runs text;
  words text;
  result text;
BEGIN
  IF latin ~ '[{CJK}]' THEN
    runs := regexp_replace(latin, '[^{CJK}]+', ' ', 'g');
    latin := regexp_replace(latin, '[{CJK}]+', ' ', 'g');
  END IF;
  words := regexp_replace(latin, '[^[:alnum:][:space:]]+', ' ', 'g');
  IF short THEN
    IF latin ~ '[[:alnum:]][^[:alnum:][:space:]]+[[:alnum:]]' THEN
      -- hyphenated words, also joined: t-shirt -> tshirt
      words := words || ' ' || regexp_replace(
        regexp_replace(latin, '(^|\s)[[:alnum:]]+(?=\s|$)', ' ', 'g'),
        '[^[:alnum:][:space:]]+', '', 'g');
    END IF;
    -- every word with its prefixes
    SELECT string_agg(left(w, k), ' ') INTO result
    FROM regexp_split_to_table(words, '\s+') w,
         generate_series(1, least(length(w), {PREFIX_MAX})) k;
    IF words ~ '[[:alnum:]]{{{PREFIX_MAX + 1},}}' THEN
      result := result || ' ' || words;  -- words longer than prefixes go
    END IF;
  ELSE
    result := words;
  END IF;
  result := coalesce(result, '');
  IF runs IS NOT NULL THEN
    -- characters, pairs from the 1st character of each run, pairs from the 2nd
    result := result || ' ' || regexp_replace(runs, '([{CJK}])', '\1 ', 'g')
      || ' ' || regexp_replace(runs, '([{CJK}]{{2}})', '\1 ', 'g')
      || ' ' || regexp_replace(regexp_replace(runs, '(^| )[{CJK}]', '\1', 'g'),
                               '([{CJK}]{{2}})', '\1 ', 'g');
  END IF;
  RETURN result;
END
$fn$;

CREATE OR REPLACE FUNCTION {schema}.product_search_document(
  title text, description text, brand text, sku text, attributes jsonb
) RETURNS tsvector LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  SELECT setweight(to_tsvector('pg_catalog.simple'::regconfig, {schema}.shop_search_tokens(
             coalesce(title, '') || ' ' || coalesce(sku, '') || ' '
             || jsonb_path_query_array(attributes, 'lax $.titles.*')::text, true)), 'A')
      || setweight(to_tsvector('pg_catalog.simple'::regconfig,
                               {schema}.shop_search_tokens(brand, true)), 'B')
      || setweight(to_tsvector('pg_catalog.simple'::regconfig,
                               {schema}.shop_search_tokens(description, false)), 'D')
$fn$;

-- What a query matches (ranking = false: every word, every CJK character) or ranks by
-- (ranking = true: any of those, or any CJK character pair). NULL: no words at all.
CREATE OR REPLACE FUNCTION {schema}.product_search_query(q text, ranking boolean)
RETURNS tsquery LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  SELECT string_agg(
           CASE WHEN length(lexeme) > {PREFIX_MAX} AND lexeme !~ '[{CJK}]'
                THEN '(''' || lexeme || ''' | ''' || left(lexeme, {PREFIX_MAX}) || ''')'
                ELSE '''' || lexeme || '''' END,
           CASE WHEN ranking THEN ' | ' ELSE ' & ' END)::tsquery
  FROM unnest(tsvector_to_array(to_tsvector('pg_catalog.simple'::regconfig,
                                            {schema}.shop_search_tokens(q, false)))) lexeme
  WHERE ranking OR NOT (lexeme ~ '[{CJK}]' AND length(lexeme) > 1)
$fn$;
"""


def create(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        schema = schema_editor.quote_name(cursor.fetchone()[0])
        cursor.execute(functions_sql(schema))
        cursor.execute(
            "ALTER TABLE catalog_product ADD COLUMN search_document tsvector GENERATED ALWAYS AS "
            f"({schema}.product_search_document(title, description, brand, sku, attributes)) "
            "STORED"
        )
        cursor.execute(
            "CREATE INDEX catalog_product_search_gin ON catalog_product USING gin (search_document)"
        )


def drop(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("ALTER TABLE catalog_product DROP COLUMN search_document")
        cursor.execute("DROP FUNCTION product_search_query(text, boolean)")
        cursor.execute("DROP FUNCTION product_search_document(text, text, text, text, jsonb)")
        cursor.execute("DROP FUNCTION shop_search_tokens(text, boolean)")


class Migration(migrations.Migration):
    dependencies = [("catalog", "0002_importjob_importrowerror")]

    operations = [migrations.RunPython(create, drop)]

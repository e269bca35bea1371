"""search_document, second version: accents folded, words inside compounds, Chinese by words.

- Accent folding without `unaccent` (the embedded server has no such extension): Latin
  accented letters are translated to plain ones on both sides ("café" and "cafe" are one
  lexeme), after Unicode NFKC (full-width letters, ligatures). The table is a frozen copy
  of catalog.text.FOLD_FROM / FOLD_TO.
- Words inside compounds: alphabetic title and brand words of 7+ letters also store their
  tails of 3+ letters that leave a head of 3+ letters, at weight C (below whole words):
  "sweatshirt" -> ... "shirt", "handbag" -> ... "bag", "earring" -> "ring", while "spring"
  and "string" store no "ring". Hyphenated words were already split ("t-shirt" -> shirt).
- Chinese by words: a query's CJK run must appear with its characters together, by their
  pairs (a run of one character: that character). The search app segments queries with
  jieba first ("红色连衣裙" -> "红色 连衣裙"), so each word must be in the document as a
  whole, and no pair across two words is asked for. Documents keep characters and pairs.
- product_search_query_any(texts, ranking): the OR of several phrasings of one query (the
  typed words, their corrections): a product matches when it matches any of them;
  product_search_query_whole(texts): the same as whole words, not compound tails.

Changing the generated column rewrites catalog_product (every row's document is computed
again, under an ACCESS EXCLUSIVE lock, so writes to products wait): 116 s for 100,000
products on 2 cores that other work kept busy (load average about 10; bench/suggest.py
measures it against 0003's document).
"""

import importlib

from django.db import migrations

CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
PREFIX_MAX = 15
# Frozen copy of catalog.text.FOLD_FROM / FOLD_TO (tests check they agree).
FOLD_FROM = (
    "àáâãäåāăąçćĉċčďđèéêëēĕėęěĝğġģĥħìíîïĩīĭįıĵķĺļľŀłñńņňòóôõöøōŏőŕŗřśŝşšţťŧùúûüũūŭůűųŵýÿŷźżž"
    "ÀÁÂÃÄÅĀĂĄÇĆĈĊČĎĐÈÉÊËĒĔĖĘĚĜĞĠĢĤĦÌÍÎÏĨĪĬĮİĴĶĹĻĽĿŁÑŃŅŇÒÓÔÕÖØŌŎŐŔŖŘŚŜŞŠŢŤŦÙÚÛÜŨŪŬŮŰŲŴÝŸŶŹŻŽ"
)
FOLD_TO = (
    "aaaaaaaaacccccddeeeeeeeeegggghhiiiiiiiiijklllllnnnnooooooooorrrsssstttuuuuuuuuuuwyyyzzz"
    "aaaaaaaaacccccddeeeeeeeeegggghhiiiiiiiiijklllllnnnnooooooooorrrsssstttuuuuuuuuuuwyyyzzz"
)


def functions_sql(schema: str) -> str:
    return rf"""
-- Compatibility forms unified (NFKC: full-width "ｓｔｒｉ" -> "stri"), lower case, Latin
-- accents folded (no unaccent extension here).
CREATE OR REPLACE FUNCTION {schema}.shop_search_fold(t text)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  SELECT replace(replace(replace(replace(replace(
           lower(translate(normalize(coalesce(t, ''), NFKC), '{FOLD_FROM}', '{FOLD_TO}')),
           'ß', 'ss'), 'æ', 'ae'), 'œ', 'oe'), 'Æ', 'ae'), 'Œ', 'oe')
$fn$;

-- As in 0003, on folded text.
CREATE OR REPLACE FUNCTION {schema}.shop_search_tokens(t text, short boolean)
RETURNS text LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
DECLARE
  latin text := {schema}.shop_search_fold(t);
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
      words := words || ' ' || regexp_replace(
        regexp_replace(latin, '(^|\s)[[:alnum:]]+(?=\s|$)', ' ', 'g'),
        '[^[:alnum:][:space:]]+', '', 'g');
    END IF;
    SELECT string_agg(left(w, k), ' ') INTO result
    FROM regexp_split_to_table(words, '\s+') w,
         generate_series(1, least(length(w), {PREFIX_MAX})) k;
    IF words ~ '[[:alnum:]]{{{PREFIX_MAX + 1},}}' THEN
      result := result || ' ' || words;
    END IF;
  ELSE
    result := words;
  END IF;
  result := coalesce(result, '');
  IF runs IS NOT NULL THEN
    result := result || ' ' || regexp_replace(runs, '([{CJK}])', '\1 ', 'g')
      || ' ' || regexp_replace(runs, '([{CJK}]{{2}})', '\1 ', 'g')
      || ' ' || regexp_replace(regexp_replace(runs, '(^| )[{CJK}]', '\1', 'g'),
                               '([{CJK}]{{2}})', '\1 ', 'g');
  END IF;
  RETURN result;
END
$fn$;

-- The tails of long words, so that a word inside a compound matches: "sweatshirt" ->
-- "shirt": tails of 3+ letters with a head of 3+, of words of 7+ ASCII letters.
CREATE OR REPLACE FUNCTION {schema}.shop_search_suffixes(t text)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  SELECT coalesce(string_agg(substr(w, k + 1), ' '), '')
  FROM regexp_split_to_table(
         regexp_replace({schema}.shop_search_fold(t), '[^a-z]+', ' ', 'g'), '\s+') w,
       generate_series(3, length(w) - 3) k
  WHERE length(w) >= 7
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
$fn$;

-- What a query matches (ranking = false: every Latin word, and every CJK run by its
-- character pairs, or its character when alone) or ranks by (ranking = true: any of
-- those or any of its characters). NULL: no words at all.
CREATE OR REPLACE FUNCTION {schema}.product_search_query(q text, ranking boolean)
RETURNS tsquery LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  WITH folded AS (
    SELECT {schema}.shop_search_fold(q) AS q
  ), lexemes AS (
    SELECT lexeme
    FROM folded, unnest(tsvector_to_array(to_tsvector('pg_catalog.simple'::regconfig,
           {schema}.shop_search_tokens(regexp_replace(folded.q, '[{CJK}]+', ' ', 'g'),
                                       false)))) lexeme
    UNION
    SELECT substr(m[1], i, 2)
    FROM folded, regexp_matches(folded.q, '([{CJK}]+)', 'g') m,
         generate_series(1, greatest(length(m[1]) - 1, 1)) i
    UNION
    SELECT substr(m[1], i, 1)
    FROM folded, regexp_matches(folded.q, '([{CJK}]+)', 'g') m,
         generate_series(1, length(m[1])) i
    WHERE ranking
  )
  SELECT string_agg(
           CASE WHEN length(lexeme) > {PREFIX_MAX} AND lexeme !~ '[{CJK}]'
                THEN '(''' || lexeme || ''' | ''' || left(lexeme, {PREFIX_MAX}) || ''')'
                ELSE '''' || lexeme || '''' END,
           CASE WHEN ranking THEN ' | ' ELSE ' & ' END ORDER BY lexeme)::tsquery
  FROM lexemes
  WHERE lexeme <> ''
$fn$;

-- Several phrasings of one query (as typed, corrected...): a product matching any of them.
CREATE OR REPLACE FUNCTION {schema}.product_search_query_any(qs text[], ranking boolean)
RETURNS tsquery LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  SELECT string_agg('(' || x::text || ')', ' | ')::tsquery
  FROM (SELECT {schema}.product_search_query(q, ranking) AS x FROM unnest(qs) q) phrasings
  WHERE x IS NOT NULL
$fn$;

-- The same phrasings as whole words only, not as the tails of compounds (weight C): what
-- "the shopper's own words match" means beside synonyms (search.ranking).
CREATE OR REPLACE FUNCTION {schema}.product_search_query_whole(qs text[])
RETURNS tsquery LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  SELECT regexp_replace({schema}.product_search_query_any(qs, false)::text,
                        '''([^'']+)''', '''\1'':ABD', 'g')::tsquery
$fn$;
"""


def rewrite_documents(cursor, schema: str, expression: str = "") -> None:
    """Compute every product's document again with the functions now defined (and, later
    migrations, with another `expression`)."""
    expression = (
        expression
        or f"{schema}.product_search_document(title, description, brand, sku, attributes)"
    )
    cursor.execute("SHOW server_version_num")
    if int(cursor.fetchone()[0]) >= 170000:
        cursor.execute(
            "ALTER TABLE catalog_product ALTER COLUMN search_document "
            f"SET EXPRESSION AS ({expression})"
        )
        return
    # Before PostgreSQL 17 a generated column's expression cannot change: add it again.
    cursor.execute("ALTER TABLE catalog_product DROP COLUMN search_document")
    cursor.execute(
        "ALTER TABLE catalog_product ADD COLUMN search_document tsvector "
        f"GENERATED ALWAYS AS ({expression}) STORED"
    )
    cursor.execute(
        "CREATE INDEX catalog_product_search_gin ON catalog_product USING gin (search_document)"
    )


def _schema(cursor, schema_editor) -> str:
    cursor.execute("SELECT current_schema()")
    return schema_editor.quote_name(cursor.fetchone()[0])


def forward(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        schema = _schema(cursor, schema_editor)
        cursor.execute(functions_sql(schema))
        rewrite_documents(cursor, schema)


def backward(apps, schema_editor):
    previous = importlib.import_module("catalog.migrations.0003_product_search_document")
    with schema_editor.connection.cursor() as cursor:
        schema = _schema(cursor, schema_editor)
        cursor.execute(previous.functions_sql(schema))
        rewrite_documents(cursor, schema)
        cursor.execute(f"DROP FUNCTION {schema}.product_search_query_whole(text[])")
        cursor.execute(f"DROP FUNCTION {schema}.product_search_query_any(text[], boolean)")
        cursor.execute(f"DROP FUNCTION {schema}.shop_search_suffixes(text)")
        cursor.execute(f"DROP FUNCTION {schema}.shop_search_fold(text)")


class Migration(migrations.Migration):
    dependencies = [("catalog", "0005_import_files_to_private_storage")]

    operations = [migrations.RunPython(forward, backward)]

"""Image and caption vectors partitioned by space: one table per space and table.

Filling and indexing a new space writes only its own partitions (the live space's table,
index and statistics are untouched: no bloat, no vacuum of the live table), and deleting
a space detaches and drops its partitions instead of deleting its rows one by one.
Each space's HNSW index is on its own partition, so it needs no `WHERE space_id` any more;
queries still say `space_id = <id>`, which prunes to that partition at planning time.

New spaces get their partitions from a trigger on the space table, so a space created in
any way (a service, the ORM, a bench) can be written to at once. A unique constraint on a
partitioned table must hold the partition key: the primary key becomes (id, space_id);
ids still come from one sequence and Django still addresses rows by id.

Each image vector row also carries its product's category (`category_id`, kept by
triggers), so a filter on a category alone applies to the vector rows themselves: inside
the HNSW scan with no join per tuple, or exactly through a btree on the column (search.
retrieval.vector_filter_sql). Added here, with the copy into partitions, so the vectors
are rewritten once.
"""

from django.db import migrations

TABLES = {
    # table: (columns in order, constraints and indexes after the move, HNSW index prefix)
    "embeddings_imageembedding": (
        "id, vector, source_sha256, error, updated, image_id, space_id",
        """
        ADD CONSTRAINT embeddings_imageembedding_pkey PRIMARY KEY (id, space_id),
        ADD CONSTRAINT one_vector_per_image_space UNIQUE (image_id, space_id),
        ADD CONSTRAINT embeddings_imageembe_image_id_a5385656_fk_catalog_p
            FOREIGN KEY (image_id) REFERENCES catalog_productimage(id)
            DEFERRABLE INITIALLY DEFERRED,
        ADD CONSTRAINT embeddings_imageembe_space_id_3c201181_fk_embedding
            FOREIGN KEY (space_id) REFERENCES embeddings_embeddingspace(id)
            DEFERRABLE INITIALLY DEFERRED""",
        "emb_image_hnsw_s",
    ),
    "embeddings_captionembedding": (
        "id, field, lang, text, vector, updated, product_id, space_id",
        """
        ADD CONSTRAINT embeddings_captionembedding_pkey PRIMARY KEY (id, space_id),
        ADD CONSTRAINT one_vector_per_caption_space UNIQUE (product_id, space_id, field),
        ADD CONSTRAINT embeddings_captionem_product_id_2679158f_fk_catalog_p
            FOREIGN KEY (product_id) REFERENCES catalog_product(id)
            DEFERRABLE INITIALLY DEFERRED,
        ADD CONSTRAINT embeddings_captionem_space_id_56615195_fk_embedding
            FOREIGN KEY (space_id) REFERENCES embeddings_embeddingspace(id)
            DEFERRABLE INITIALLY DEFERRED""",
        "emb_caption_hnsw_s",
    ),
}
# Django's index on the foreign key, kept with its name (the space's is pointless now:
# a partition holds one space).
IMAGES = "embeddings_imageembedding"
KEY_INDEXES = {
    "embeddings_imageembedding": ("embeddings_imageembedding_image_id_a5385656", "image_id"),
    "embeddings_captionembedding": ("embeddings_captionembedding_product_id_2679158f", "product_id"),
}

# LIKE + ATTACH rather than CREATE TABLE ... PARTITION OF: attaching takes only a SHARE
# UPDATE EXCLUSIVE lock on the parent, so creating a space never waits for, or blocks,
# searches and embedding writes of the live one. The parent's indexes, constraints and
# foreign keys are cloned onto the partition as it attaches.
PARTITIONS_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.shop_search_space_partitions() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  parent text;
  part text;
BEGIN
  -- DDL on a table refuses to run while this transaction has deferred foreign key checks
  -- pending on it: run them now, and defer again after (as every key here is).
  SET CONSTRAINTS ALL IMMEDIATE;
  FOREACH parent IN ARRAY ARRAY['embeddings_imageembedding', 'embeddings_captionembedding'] LOOP
    IF TG_OP = 'INSERT' THEN
      part := parent || '_s' || NEW.id;
      -- A partition left by a TRUNCATE of the spaces (tests) is taken as it is.
      CONTINUE WHEN to_regclass(quote_ident(part)) IS NOT NULL;
      EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)', part, parent);
      EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES IN (%s)',
                     parent, part, NEW.id);
    ELSE
      EXECUTE format('DROP TABLE IF EXISTS %I', parent || '_s' || OLD.id);
    END IF;
  END LOOP;
  SET CONSTRAINTS ALL DEFERRED;
  RETURN NULL;
END
$fn$;
CREATE TRIGGER embeddings_space_partitions
  AFTER INSERT OR DELETE ON embeddings_embeddingspace
  FOR EACH ROW EXECUTE FUNCTION {schema}.shop_search_space_partitions();
"""


CATEGORY_TRIGGERS = """
CREATE INDEX embeddings_imageembedding_category ON embeddings_imageembedding (category_id);
CREATE FUNCTION {schema}.shop_search_image_vector_category() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
  SELECT p.category_id INTO NEW.category_id
  FROM catalog_productimage i JOIN catalog_product p ON p.id = i.product_id
  WHERE i.id = NEW.image_id;
  RETURN NEW;
END
$fn$;
CREATE TRIGGER embeddings_image_vector_category
  BEFORE INSERT ON embeddings_imageembedding
  FOR EACH ROW EXECUTE FUNCTION {schema}.shop_search_image_vector_category();
CREATE FUNCTION {schema}.shop_search_product_category_vectors() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
  UPDATE embeddings_imageembedding e SET category_id = NEW.category_id
  FROM catalog_productimage i
  WHERE i.product_id = NEW.id AND e.image_id = i.id;
  RETURN NULL;
END
$fn$;
CREATE TRIGGER embeddings_product_category_vectors
  AFTER UPDATE OF category_id ON catalog_product
  FOR EACH ROW WHEN (OLD.category_id IS DISTINCT FROM NEW.category_id)
  EXECUTE FUNCTION {schema}.shop_search_product_category_vectors();
"""
CATEGORY_TRIGGERS_DROP = """
DROP TRIGGER embeddings_product_category_vectors ON catalog_product;
DROP FUNCTION {schema}.shop_search_product_category_vectors();
DROP FUNCTION {schema}.shop_search_image_vector_category() CASCADE;
"""


def _schema(cursor, schema_editor) -> str:
    cursor.execute("SELECT current_schema()")
    return schema_editor.quote_name(cursor.fetchone()[0])


def _hnsw_indexes(cursor, table: str, prefix: str) -> dict[int, str]:
    """{space id: the cast its HNSW index uses} of the spaces that have one on `table`."""
    cursor.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
        "AND (tablename = %s OR tablename LIKE %s) AND indexname LIKE %s",
        [table, f"{table}\\_s%", f"{prefix}%"],
    )
    found = {}
    for name, definition in cursor.fetchall():
        if not name.removeprefix(prefix).isdigit():  # a category block's: rebuilt by sync
            continue
        cast = definition.split("::", 1)[1].split(")", 1)[0]  # "halfvec(512)"
        found[int(name.removeprefix(prefix))] = cast + ")"
    return found


def _rebuild(cursor, table: str, columns: str, partitioned: bool, space_ids: list[int]) -> None:
    """`table` rebuilt as a partitioned one (or back to a plain one), rows and ids kept."""
    new = f"{table}_new"
    by = " PARTITION BY LIST (space_id)" if partitioned else ""
    cursor.execute(f"CREATE TABLE {new} (LIKE {table}){by}")  # its id default: below
    source = f"SELECT {columns} FROM {table}"
    if table == IMAGES and partitioned:  # and the category of each vector's product
        cursor.execute(f"ALTER TABLE {new} ADD COLUMN category_id bigint")
        source = f"""SELECT {", ".join(f"e.{c}" for c in columns.split(", "))}, p.category_id
            FROM {table} e JOIN catalog_productimage i ON i.id = e.image_id
            JOIN catalog_product p ON p.id = i.product_id"""
        columns += ", category_id"
    elif table == IMAGES:
        cursor.execute(f"ALTER TABLE {new} DROP COLUMN category_id")
    if partitioned:
        for space_id in space_ids:
            cursor.execute(
                f"CREATE TABLE {table}_s{space_id} PARTITION OF {new} FOR VALUES IN ({space_id})"
            )
    cursor.execute(f"INSERT INTO {new} ({columns}) {source}")
    cursor.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {table}")
    (next_id,) = cursor.fetchone()
    cursor.execute(f"DROP TABLE {table}")  # its identity sequence, indexes and constraints
    if not partitioned:
        for space_id in space_ids:
            cursor.execute(f"DROP TABLE IF EXISTS {table}_s{space_id}")
    cursor.execute(f"ALTER TABLE {new} RENAME TO {table}")
    # A sequence, not an identity: identity columns on partitioned tables need PostgreSQL 17.
    cursor.execute(f"ALTER TABLE {table} ALTER COLUMN id DROP DEFAULT")
    cursor.execute(f"CREATE SEQUENCE IF NOT EXISTS {table}_id_seq OWNED BY {table}.id")
    cursor.execute(f"SELECT setval('{table}_id_seq', %s, false)", [next_id])
    cursor.execute(f"ALTER TABLE {table} ALTER COLUMN id SET DEFAULT nextval('{table}_id_seq')")


def _move(schema_editor, partitioned: bool) -> None:
    with schema_editor.connection.cursor() as cursor:
        schema = _schema(cursor, schema_editor)
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # DDL waits for no deferred check
        cursor.execute("SELECT id FROM embeddings_embeddingspace ORDER BY id")
        space_ids = [row[0] for row in cursor.fetchall()]
        if not partitioned:
            cursor.execute("DROP TRIGGER embeddings_space_partitions ON embeddings_embeddingspace")
            cursor.execute(f"DROP FUNCTION {schema}.shop_search_space_partitions()")
            cursor.execute(CATEGORY_TRIGGERS_DROP.format(schema=schema))
        for table, (columns, constraints, prefix) in TABLES.items():
            indexed = _hnsw_indexes(cursor, table, prefix)
            _rebuild(cursor, table, columns, partitioned, space_ids)
            if partitioned:
                cursor.execute(f"ALTER TABLE {table} {constraints}")
            else:  # the original: an id primary key, and the space's own index
                cursor.execute(
                    f"ALTER TABLE {table} "
                    + constraints.replace("PRIMARY KEY (id, space_id)", "PRIMARY KEY (id)")
                )
                cursor.execute(f"CREATE INDEX {table}_space_id ON {table} (space_id)")
            index, column = KEY_INDEXES[table]
            cursor.execute(f"CREATE INDEX {index} ON {table} ({column})")
            for space_id, cast in indexed.items():
                if space_id not in space_ids:  # left by a space deleted without its index
                    continue
                on = f"{table}_s{space_id}" if partitioned else table
                where = "" if partitioned else f" WHERE space_id = {space_id}"
                cursor.execute(
                    f"CREATE INDEX {prefix}{space_id} ON {on} USING hnsw "
                    f"((vector::{cast}) halfvec_cosine_ops){where}"
                )
        if partitioned:
            cursor.execute(PARTITIONS_FUNCTION.format(schema=schema))
            cursor.execute(CATEGORY_TRIGGERS.format(schema=schema))
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")


class Migration(migrations.Migration):
    dependencies = [
        ("embeddings", "0005_reindexchunk"),
        ("catalog", "0010_product_rows_inline"),
    ]

    operations = [
        migrations.RunPython(
            lambda apps, schema_editor: _move(schema_editor, partitioned=True),
            lambda apps, schema_editor: _move(schema_editor, partitioned=False),
        )
    ]

"""Search filters: the shopper's (category, brand, price, stock, `attr.<name>`) and those a
query is understood to mean, as SQL on a product row. Price, stock and options hold together
on one variant: a product with variants is tested on its `variant_offers`, one without is
its own one variant."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class AttributeFilter:
    """`attr.<name>=<value>`: an option or attribute among `keys` ("size=m", aliases
    included; catalog.selectors.facet_value_keys). `lenient`: a product that has no such
    option or attribute at all passes (a value the query named: products the shop never
    described by it are not dropped for that)."""

    name: str  # lower case
    keys: tuple[str, ...]
    values: tuple[str, ...] = ()  # as asked, for labels
    lenient: bool = False


@dataclass(frozen=True)
class SearchFilters:
    category_ids: tuple[int, ...] = ()  # a category and its sub-categories
    brand: str = ""
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    in_stock: bool | None = None
    attributes: tuple[AttributeFilter, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.category_ids or self.brand or self.attributes) or any(
            value is not None for value in (self.min_price, self.max_price, self.in_stock)
        )

    def sql(self, alias: str, prefix: str = "f", *, summary: bool = False) -> tuple[str, dict]:
        """` AND ...` conditions on the catalog_product row `alias`, and their parameters
        (named `<prefix>_...`, so two sets of filters can share a statement).

        Price, stock and option filters hold together for one variant: "size M, in stock"
        keeps a product only when one of its active variants is both; a product without
        variants is its own one variant; one with variants is tested on its
        `variant_offers` (`offers_sql`). `summary`: the product's own columns (for products
        with variants, their summary) instead of the variant test, for the planner's
        estimate of how many products are kept (it takes the CASE and the JSON path for a
        fraction each, whatever they keep).
        """
        sql, params = "", {}
        if self.category_ids:
            sql += f" AND {alias}.category_id = ANY(%({prefix}_category_ids)s)"
            params[f"{prefix}_category_ids"] = list(self.category_ids)
        if self.brand:
            sql += f" AND {alias}.brand = %({prefix}_brand)s"
            params[f"{prefix}_brand"] = self.brand
        for i, attribute in enumerate(self.attributes):
            params[f"{prefix}_attr{i}"] = list(attribute.keys)
            params[f"{prefix}_attr{i}_name"] = [attribute.name]
            if not attribute.lenient:  # the products' own keys: a GIN index lookup
                sql += f" AND {alias}.facet_keys && %({prefix}_attr{i})s"
        variant_sql, product_sql = self.variant_sql(f"{prefix}_v", alias, prefix)
        # One condition alone is decided by the summary exactly: no variant test. (As a
        # narrowing before the variant test, the summary made the planner's exact ranking
        # of a price band slower, bench/variants.py.)
        decided = not summary and self._decided_by_summary()
        if summary or decided:
            summarised = self._summary_sql(alias, prefix, exact=decided)
            sql += "".join(f" AND {condition}" for condition in summarised)
        elif variant_sql != "true":
            for i, attribute in enumerate(self.attributes):
                if attribute.lenient:  # the product's part of an option it may lack
                    sql += f" AND {lenient_sql(alias, prefix, i)}"
            offers, params[f"{prefix}_offers"] = self.offers_sql(alias, prefix)
            sql += f""" AND CASE WHEN {alias}.options = '[]'::jsonb THEN {product_sql}
                ELSE {offers} END"""
        for name in ("min_price", "max_price", "in_stock"):
            if getattr(self, name) is not None:
                params[f"{prefix}_{name}"] = getattr(self, name)
        return sql, params

    def _summary_sql(self, alias: str, prefix: str, *, exact: bool = False) -> list[str]:
        """The price, stock and lenient option conditions on the product's own columns,
        which summarise its active variants: price the least of the sellable ones', price_max
        the most of all, in stock if one is. `exact`: only those that no product passing the
        variant test fails (not the upper price, nor "out of stock", which the summary
        cannot tell)."""
        conditions = []
        if self.min_price is not None:
            # For the estimate, the lowest price: with the upper bound on the same column
            # the planner reads a band from its histogram, where an expression's share is a
            # guess (a third), which made a 39% band look like 16% (bench/variants.py).
            lowest = f"coalesce({alias}.price_max, {alias}.price)" if exact else f"{alias}.price"
            conditions.append(f"{lowest} >= %({prefix}_min_price)s")
        if self.max_price is not None and not exact:
            conditions.append(f"{alias}.price <= %({prefix}_max_price)s")
        if self.in_stock is not None and (self.in_stock or not exact):
            conditions.append(f"{alias}.in_stock = %({prefix}_in_stock)s")
        for i, attribute in enumerate(self.attributes):
            if attribute.lenient:  # the others' keys are tested in sql() already
                conditions.append(lenient_sql(alias, prefix, i))
        return conditions

    def _decided_by_summary(self) -> bool:
        """One variant condition alone, which the summary decides exactly: in stock, a
        lowest price, an option or attribute ("size M" alone needs no variant test; "size
        M in stock" does)."""
        asked = [self.min_price, self.max_price, self.in_stock, *self.attributes]
        alone = sum(value is not None for value in asked) == 1
        return alone and self.max_price is None and self.in_stock is not False

    def offers_sql(self, alias: str, prefix: str = "f") -> tuple[str, str]:
        """`variant_sql` on the product row `alias` alone, and its one parameter (named
        `<prefix>_offers`): one of its `variant_offers` (each active variant's price, stock
        and option keys) meets the conditions. A JSON path with constant variables over the
        row costs a fraction of reading the variants, which every word match and exactly
        ranked product would (bench/variants.py).

        An option the variant lacks is left to the product: a product with the value as
        an attribute passes, as `variant_sql` says; the product-level test (`facet_keys`
        has the value, or for a lenient filter, no value of that name) is the caller's.
        """
        tests, variables = [], {}
        for name, test in (
            ("min_price", "@.p >= $min_price"),
            ("max_price", "@.p <= $max_price"),
            ("in_stock", "@.s == $in_stock"),
        ):
            if (value := getattr(self, name)) is not None:
                tests.append(test)
                variables[name] = float(value) if name != "in_stock" else value
        for i, attribute in enumerate(self.attributes):
            tests.append(f"(@.k[*] == $keys{i}[*] || !(@.k[*] == $name{i}))")
            variables[f"keys{i}"], variables[f"name{i}"] = list(attribute.keys), attribute.name
        path = "$[*] ? (" + " && ".join(tests) + ")"
        sql = f"jsonb_path_exists({alias}.variant_offers, '{path}', %({prefix}_offers)s::jsonb)"
        return sql, json.dumps(variables)

    def variant_sql(self, variant: str, alias: str, prefix: str = "f") -> tuple[str, str]:
        """The conditions one variant (`variant`, a catalog_productvariant row of the
        product `alias`) must meet, and what a product without variants must meet instead;
        parameters as sql() names them. ("true", "true"): nothing to meet."""
        on_variant, on_product = [], []
        for name, operator in (("min_price", ">="), ("max_price", "<=")):
            if getattr(self, name) is not None:
                on_variant.append(f"{variant}.price {operator} %({prefix}_{name})s")
                on_product.append(f"{alias}.price {operator} %({prefix}_{name})s")
        if self.in_stock is not None:
            on_variant.append(f"{variant}.in_stock = %({prefix}_in_stock)s")
            on_product.append(f"{alias}.in_stock = %({prefix}_in_stock)s")
        for i, attribute in enumerate(self.attributes):
            keys, name = f"%({prefix}_attr{i})s", f"%({prefix}_attr{i}_name)s"
            # An option of the variant, else an attribute of the product.
            product_has = f"{alias}.facet_keys && {keys}"
            if attribute.lenient:
                product_has = lenient_sql(alias, prefix, i)
            # An attribute only where the name is none of the product's options.
            is_option = (
                f"EXISTS (SELECT 1 FROM jsonb_array_elements({alias}.options) {variant}_o "
                f"WHERE lower(trim({variant}_o ->> 'name')) = ANY({name}))"
            )
            on_variant.append(
                f"({variant}.option_keys && {keys} OR (NOT {is_option} AND {product_has}))"
            )
            on_product.append(product_has)
        if not on_variant:
            return "true", "true"
        return f"{variant}.active AND " + " AND ".join(on_variant), " AND ".join(on_product)


def lenient_sql(alias: str, prefix: str, i: int) -> str:
    """The lenient attribute filter `i` on the product row `alias`: it has one of the
    keys, or no value of that name at all."""
    return (
        f"(NOT {alias}.facet_keys && %({prefix}_attr{i}_name)s "
        f"OR {alias}.facet_keys && %({prefix}_attr{i})s)"
    )

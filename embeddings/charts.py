"""Tiny inline SVG line charts for the admin: no plotting library, no JavaScript."""

from django.utils.html import format_html, format_html_join


def line_chart_svg(
    values: list[float],
    *,
    title: str,
    width: int = 360,
    height: int = 120,
    colour: str = "#417690",
    y_range: tuple[float, float] | None = None,
    x_labels: tuple[str, str] | None = None,
) -> str:
    """A polyline of `values` (index on x) with its title and min/max labels.

    `y_range` fixes the axis (a rate from 0 to 1 should not look steep for a small change);
    `x_labels` names the first and last point (dates), under the line.
    """
    points = [v for v in values if v is not None]
    if len(points) < 2:
        return format_html("<p>{}: not enough points yet</p>", title)
    low, high = y_range if y_range else (min(points), max(points))
    span = (high - low) or 1.0
    pad = 18
    step = (width - 2 * pad) / (len(points) - 1)
    coords = " ".join(
        f"{pad + i * step:.1f},{height - pad - (v - low) / span * (height - 2 * pad):.1f}"
        for i, v in enumerate(points)
    )
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
        'aria-label="{t}" style="background:#fff;border:1px solid #ddd;margin:4px">'
        '<text x="{p}" y="12" font-size="11">{t}</text>'
        '<text x="{w2}" y="12" font-size="10" text-anchor="end">max {hi}</text>'
        '<text x="{w2}" y="{h2}" font-size="10" text-anchor="end">min {lo}</text>'
        '<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{pts}"/>{x}</svg>',
        w=width,
        h=height,
        t=title,
        p=pad,
        w2=width - 4,
        h2=height - 4,
        hi=f"{high:.3g}",
        lo=f"{low:.3g}",
        c=colour,
        pts=coords,
        x=format_html(
            '<text x="{}" y="{}" font-size="10">{} – {}</text>', pad, height - 4, *x_labels
        )
        if x_labels
        else "",
    )


def bar_chart_svg(
    values: dict[str, float], *, title: str, width: int = 360, colour: str = "#417690"
) -> str:
    """Horizontal bars of `values` (name -> a non-negative number), largest first."""
    items = sorted(((k, v) for k, v in values.items() if v), key=lambda kv: -kv[1])
    if not items:
        return format_html("<p>{}: nothing to show yet</p>", title)
    row, label, pad = 16, 130, 4
    high = items[0][1]
    height = 20 + row * len(items)
    bars = format_html_join(
        "",
        '<text x="{}" y="{}" font-size="10" text-anchor="end">{}</text>'
        '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"/>'
        '<text x="{}" y="{}" font-size="10">{}</text>',
        (
            (
                label - pad,
                20 + i * row + 10,
                name,
                label,
                20 + i * row + 2,
                f"{(width - label - 50) * value / high:.1f}",
                row - 4,
                colour,
                f"{label + (width - label - 50) * value / high + pad:.1f}",
                20 + i * row + 10,
                f"{value / high:.0%}",
            )
            for i, (name, value) in enumerate(items)
        ),
    )
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" role="img" '
        'aria-label="{}" style="background:#fff;border:1px solid #ddd;margin:4px">'
        '<text x="{}" y="12" font-size="11">{}</text>{}</svg>',
        width,
        height,
        title,
        pad,
        title,
        bars,
    )


METRIC_KEYS = ["t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10", "mean_recall"]
# Column headers a person reads: which way it searches, and at how many results.
METRIC_LABELS = {
    "t2i_r1": "text→image R@1",
    "t2i_r5": "text→image R@5",
    "t2i_r10": "text→image R@10",
    "i2t_r1": "image→text R@1",
    "i2t_r5": "image→text R@5",
    "i2t_r10": "image→text R@10",
    "mean_recall": "mean recall",
}


def metrics_table(rows: dict[str, dict]) -> str:
    """Recall@K rows (model name -> metrics) as an HTML table."""
    header = format_html_join(
        "", "<th scope='col'>{}</th>", ((METRIC_LABELS[key],) for key in METRIC_KEYS)
    )
    body = format_html_join(
        "",
        "<tr><th>{}</th>{}</tr>",
        (
            (
                name,
                format_html_join(
                    "", "<td>{}</td>", ((f"{metrics.get(k, 0):.3f}",) for k in METRIC_KEYS)
                ),
            )
            for name, metrics in rows.items()
            if metrics
        ),
    )
    return format_html(
        "<table><thead><tr><th></th>{}</tr></thead><tbody>{}</tbody></table>", header, body
    )

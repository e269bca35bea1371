"""What the embeddings commands share: finding a space by name, printing Recall@K tables."""

from django.core.management.base import CommandError

from embeddings.models import EmbeddingSpace
from embeddings.spaces import NoActiveSpace, space_active


def space_by_name(name: str | None) -> EmbeddingSpace:
    """The space named `name`, or the active one when no name is given; else a CommandError."""
    if not name:
        try:
            return space_active()
        except NoActiveSpace as exc:
            raise CommandError(str(exc)) from None
    try:
        return EmbeddingSpace.objects.get(name=name)
    except EmbeddingSpace.DoesNotExist:
        names = ", ".join(EmbeddingSpace.objects.values_list("name", flat=True)) or "none"
        raise CommandError(f"no embedding space named {name!r} (spaces: {names})") from None


def print_metrics(stdout, rows: dict[str, dict]) -> None:
    """A Recall@K table, one row per model, the way retrieval papers report it."""
    keys = ["t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10", "mean_recall"]
    width = max(len(name) for name in rows) + 2
    stdout.write(f"{'':{width}}" + "".join(f"{k:>12}" for k in keys))
    for name, metrics in rows.items():
        stdout.write(f"{name:{width}}" + "".join(f"{metrics.get(k, 0):>12.3f}" for k in keys))

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from embeddings.encoder import CheckpointError
from embeddings.management.commandline import space_by_name
from embeddings.reindex import space_activate_fanout


class Command(BaseCommand):
    help = (
        "Make a space the active one (e.g. roll back to an earlier model): its missing "
        "vectors are filled and its index built first, then search switches in one "
        "transaction."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--batch-size", type=int, default=256)

    def handle(self, *args, name, batch_size, **options):
        space = space_by_name(name)
        with tqdm(desc="filling", unit="row", disable=options["verbosity"] == 0) as bar:
            try:
                space_activate_fanout(
                    space=space, batch_size=batch_size, progress=lambda kind, n: bar.update(n)
                )
            except CheckpointError as exc:
                raise CommandError(f"{exc}; the active space is unchanged") from exc
        self.stdout.write(self.style.SUCCESS(f"{space.name} is now the active space"))

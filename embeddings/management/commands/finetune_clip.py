import os
from dataclasses import fields

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from embeddings.distributed_finetune import (
    Launch,
    finetune_run_execute_distributed,
    finetune_run_train,
)
from embeddings.finetuning import FinetuneError, FinetuneOptions, training_epochs_text
from embeddings.management.commandline import (
    print_metrics,
    space_by_name,
    training_bar,
    training_bar_update,
)
from embeddings.models import EmbeddingSpace
from embeddings.services import finetune_run_create
from embeddings.training import TrainConfig


class Command(BaseCommand):
    help = (
        "Fine-tune CLIP on the catalog's (title, image) pairs, evaluate Recall@1/5/10 both "
        "ways before and after, save the model as a new space, and make it active only if "
        "it beats the active space by the configured margin."
    )

    def add_arguments(self, parser):
        start = parser.add_mutually_exclusive_group()
        start.add_argument(
            "--from",
            dest="source",
            metavar="SPACE",
            help="start from this space's weights (default: the active space)",
        )
        start.add_argument(
            "--pretrained",
            metavar="TAG",
            help="start from an open_clip pretrained tag (needs the model hub)",
        )
        start.add_argument(
            "--scratch",
            action="store_true",
            help="start from a fixed-seed random init of the architecture",
        )
        parser.add_argument("--architecture", help="with --pretrained or --scratch")
        defaults = TrainConfig()
        parser.add_argument("--epochs", type=int, default=defaults.epochs)
        parser.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help="pairs per step (default: larger on GPU than on CPU)",
        )
        parser.add_argument("--lr", type=float, default=defaults.lr)
        parser.add_argument(
            "--max-minutes",
            type=float,
            default=None,
            help="stop training cleanly after this many minutes",
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--name", help="name of the new space (default: generated)")
        parser.add_argument(
            "--margin",
            type=float,
            default=None,
            help="required gain in validation mean recall (default: settings)",
        )
        parser.add_argument(
            "--no-promote",
            action="store_true",
            help="keep the result as a candidate whatever it scores",
        )
        parser.add_argument(
            "--no-events",
            action="store_true",
            help="leave out the shoppers' (query, chosen product) pairs from the search log",
        )
        parser.add_argument(
            "--no-kind-captions",
            action="store_true",
            help="titles only: no pairs of each photo with its category's names",
        )
        files = parser.add_argument_group("the toolkits' 'text<TAB>base64 image' files")
        files.add_argument(
            "--pairs", metavar="TRAIN.TSV", help="train on this file as well as the catalog"
        )
        files.add_argument(
            "--val-pairs",
            metavar="DEV.TSV",
            help="validate the file's training on this one (default: a split of --pairs)",
        )
        files.add_argument(
            "--no-catalog",
            action="store_true",
            help="train on --pairs only; the catalog's validation split still decides promotion",
        )
        world = parser.add_argument_group(
            "distributed training (torchrun, DDP; --batch-size is the batch of all processes)"
        )
        world.add_argument(
            "--nproc",
            type=int,
            default=None,
            help="training processes on this machine: one per GPU (default: FINETUNE_NPROC)",
        )
        world.add_argument("--nnodes", type=int, default=1, help="machines in the run")
        world.add_argument(
            "--node-rank",
            type=int,
            default=0,
            help="this machine's number; machine 0 records, evaluates and promotes the run",
        )
        world.add_argument(
            "--rdzv-endpoint",
            default="",
            metavar="HOST:PORT",
            help="where machine 0 meets the others (needed with --nnodes above 1)",
        )

    def handle(self, *args, **options):
        for name in ("epochs", "batch_size"):
            if options[name] is not None and options[name] < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1")
        if options["lr"] <= 0:
            raise CommandError("--lr must be positive")
        if options["max_minutes"] is not None and options["max_minutes"] <= 0:
            raise CommandError("--max-minutes must be positive")
        if options["name"] and EmbeddingSpace.objects.filter(name=options["name"]).exists():
            raise CommandError(f"a space named {options['name']!r} exists already")
        if (options["val_pairs"] or options["no_catalog"]) and not options["pairs"]:
            raise CommandError("--val-pairs and --no-catalog need training pairs (--pairs)")
        for name in ("pairs", "val_pairs"):
            if options[name]:
                if not os.path.isfile(options[name]):
                    raise CommandError(f"no such file: {options[name]}")
                # The run may execute in a worker with another working directory.
                options[name] = os.path.abspath(options[name])
        launch = self._launch(options)
        if launch.node_rank > 0:  # machine 0 holds the run; this one lends its processes
            return
        options["nproc"] = launch.nproc
        source = space_by_name(options["source"]) if options["source"] else None
        given = {f.name: options[f.name] for f in fields(FinetuneOptions) if f.name in options}
        try:
            run = finetune_run_create(source=source, options=FinetuneOptions(**given))
        except FinetuneError as exc:  # another run is queued or running
            raise CommandError(str(exc)) from exc
        # Rank 0 of a distributed run prints its own progress lines: no bar here then.
        quiet = options["verbosity"] == 0 or launch.distributed
        bar = training_bar(disable=quiet)
        try:
            run = finetune_run_train(run=run, launch=launch, on_progress=self._progress(bar))
        except FinetuneError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            bar.close()
        result = run.result
        space = run.space
        print_metrics(
            self.stdout,
            {
                f"active ({space.metrics['active_space']})": result["active_before"],
                f"new ({space.name})": result["after"],
            },
        )
        catalog = space.metrics["validated_on"] == "catalog"
        self.stdout.write(
            "on the catalog's validation products" if catalog else "on the pair files' validation"
        )
        pair_files = space.metrics.get("pair_files", {})
        if pair_files.get("after"):
            where = pair_files.get("val", {}).get("path") or f"{options['pairs']} (split off)"
            print_metrics(
                self.stdout,
                {"active": pair_files["active_before"], "new": pair_files["after"]},
            )
            self.stdout.write(f"on the validation pairs of {where}")
        training = space.metrics["training"]
        self.stdout.write(
            f"{training['train_pairs']} training pairs, {training_epochs_text(training)}, "
            f"{training['pairs_per_second']:.0f} pairs/s on {training['device']}, "
            f"world size {training.get('world_size', 1)}"
        )
        self._gates(space.metrics, result)
        self.stdout.write(self.style.SUCCESS(result["decision"]))
        if result.get("bad_lines"):
            raise CommandError(
                f"{result['bad_lines']} line(s) of the pair files could not be used "
                "(reported above); the rest were trained on",
                returncode=1,
            )

    def _gates(self, metrics: dict, result: dict) -> None:
        """The shoppers' pairs trained on, each promotion gate's say, and which decided."""
        for name, extra in metrics.get("extra_pairs", {}).items():
            self.stdout.write(f"{extra['train_pairs']} training pairs from {name}: {extra}")
        for gate in result.get("gates", []):
            self.stdout.write(f"{gate['gate']} gate: {gate['detail']} (passed: {gate['passed']})")
        self.stdout.write(f"decided by: {result['decided_by']}")

    def _launch(self, options) -> Launch:
        """The run's processes; on a machine other than 0, they are started and waited for
        here (machine 0 records the run)."""
        try:
            launch = Launch(
                nproc=settings.FINETUNE_NPROC if options["nproc"] is None else options["nproc"],
                nnodes=options["nnodes"],
                node_rank=options["node_rank"],
                rdzv_endpoint=options["rdzv_endpoint"],
            )
            if launch.node_rank > 0:
                finetune_run_execute_distributed(run=None, launch=launch)
        except FinetuneError as exc:
            raise CommandError(str(exc)) from exc
        if launch.node_rank > 0:
            self.stdout.write(
                f"machine {launch.node_rank}: its {launch.nproc} "
                f"process{'es' if launch.nproc > 1 else ''} trained in world size "
                f"{launch.world_size}; machine 0 reports the run"
            )
        return launch

    def _progress(self, bar):
        def on_event(event: dict) -> None:
            if event.get("event") == "bad_line":
                with bar.external_write_mode():
                    self.stderr.write(f"{event['file']}:{event['line']}: {event['reason']}")
                return
            training_bar_update(bar, event)
            if event.get("event") == "epoch" and event.get("val"):
                short = "" if event.get("complete", True) else " (cut short by the time budget)"
                bar.write(
                    f"epoch {event['epoch']}{short}: validation mean recall "
                    f"{event['val']['mean_recall']:.3f}"
                )

        return on_event

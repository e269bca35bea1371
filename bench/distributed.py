"""Fine-tuning on 1 and on 2 processes (torchrun, DDP): pairs/s, and recall after the same epochs.

Django-free, the recipe of `finetune_clip --nproc N` on the demo catalog (shop-tiny, split
by product, TrainConfig defaults: the batch is that of all processes together). Each run
is launched by torchrun (`torch.distributed.run`) as its own processes; the 1-process run is
the plain single-process path (`finetune` without a world), the baseline. The device is
chosen here: with two GPUs or more, 1 GPU against 2 (NCCL); else 1 CPU process against 2
(gloo), each process with `--threads` intra-op threads (default 1: one core each, like
one GPU each). Prints a line per run and the ratio of pairs/s, and the validation recall of
both, which should agree within noise (same batches, same steps).

    python bench/distributed.py [--products 400] [--epochs 12] [--nproc 2] [--out FILE]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def worker(args) -> None:
    """One rank: train shop-tiny on the demo examples; rank 0 writes the result."""
    import torch

    from embeddings.encoder import ClipEncoder, ModelSpec
    from embeddings.training import TrainConfig, finetune, split_by_product
    from embeddings.training.distributed import world_close, world_init

    torch.set_num_threads(args.threads)
    from devices import demo_examples

    world = world_init(args.device) if args.nproc > 1 else None
    examples = demo_examples(args.products)
    _, val_keys = split_by_product(sorted({e.product_key for e in examples}))
    val_keys = set(val_keys)
    train = [e for e in examples if e.product_key not in val_keys]
    val = [e for e in examples if e.product_key in val_keys]
    main = world is None or world.is_main
    device = world.device if world else torch.device(args.device)
    encoder = ClipEncoder(ModelSpec("shop-tiny", seed=0), device=device)
    config = TrainConfig(epochs=args.epochs, seed=0, device=str(device))
    # CPU seconds of this rank between the start of training and its end (steps and one
    # validation on rank 0): on a machine shared with other work, pairs per CPU-second
    # tell how much DDP costs even when the wall clock cannot.
    cpu = {}

    def on_event(event):
        if event["event"] in ("start", "end"):
            cpu[event["event"]] = time.process_time()

    started = time.perf_counter()
    result = finetune(
        encoder.model,
        encoder.preprocess,
        encoder.tokenizer,
        train,
        val if main else (),
        config,
        on_event,
        world=world,
    )
    cpu_seconds = torch.tensor([cpu["end"] - cpu["start"]], dtype=torch.float64)
    if world:  # all ranks' CPU seconds together
        summed = cpu_seconds.to(world.device)
        torch.distributed.all_reduce(summed)
        cpu_seconds = summed.cpu()
    if main:
        report = {
            "world_size": result.world_size,
            "device": result.device,
            "precision": result.precision,
            "threads_per_process": args.threads if device.type == "cpu" else None,
            "steps": result.steps,
            "epochs": result.epochs_completed,
            "batch_size": result.batch_size,
            "train_pairs": len(train),
            "pairs_per_second": result.pairs_per_second,
            "pairs_per_cpu_second": result.pairs_seen / float(cpu_seconds[0]),
            "train_seconds": result.train_seconds,
            "wall_seconds": time.perf_counter() - started,
            "before": result.metrics_before,
            "after": result.metrics_after,
            "first_loss": result.losses[0],
            "last_loss": result.losses[-1],
        }
        Path(args.out).write_text(json.dumps(report, indent=2))
    if world:
        world_close()


def launch(args, nproc: int, out: Path) -> dict:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", str(nproc), "--max-restarts", "0", __file__, "--worker"]
    command += ["--processes", str(nproc), "--device", args.device, "--threads", str(args.threads)]
    command += ["--products", str(args.products), "--epochs", str(args.epochs), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    subprocess.run(command, check=True, cwd=ROOT, env=env)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=12)
    # (--processes: torchrun's parser would take --nproc for its own --nproc-per-node)
    parser.add_argument(
        "--nproc", "--processes", type=int, default=2, help="processes of the second run"
    )
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per CPU process")
    parser.add_argument("--device", default="", help="default: cuda with 2 GPUs or more, else cpu")
    parser.add_argument("--out", help="write both runs' results here as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    import torch

    if not args.device:
        args.device = "cuda" if torch.cuda.device_count() >= args.nproc else "cpu"
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for nproc in (1, args.nproc):
            runs[nproc] = launch(args, nproc, Path(tmp) / f"{nproc}.json")
    one, many = runs[1], runs[args.nproc]
    where = f"{args.device}" + (
        f", {args.threads} thread(s) per process" if args.device == "cpu" else ""
    )
    print(
        f"\nshop-tiny on {args.products} demo products, {args.epochs} epochs, "
        f"batch {one['batch_size']}, {where}"
    )
    for nproc, run in runs.items():
        print(
            f"  {nproc} process{'es' if nproc > 1 else ''}: {run['pairs_per_second']:.1f} pairs/s "
            f"({run['steps']} steps in {run['train_seconds']:.0f} s), validation mean recall "
            f"{run['before']['mean_recall']:.3f} -> {run['after']['mean_recall']:.3f}, "
            f"last loss {run['last_loss']:.3f}, "
            f"{run['pairs_per_cpu_second']:.1f} pairs per CPU-second"
        )
    ratio = many["pairs_per_second"] / one["pairs_per_second"]
    gap = many["after"]["mean_recall"] - one["after"]["mean_recall"]
    print(f"  ratio {args.nproc} vs 1 process: {ratio:.2f}x pairs/s; recall difference {gap:+.3f}")
    if args.device == "cpu":
        efficiency = many["pairs_per_cpu_second"] / one["pairs_per_cpu_second"]
        print(
            f"  pairs per CPU-second {args.nproc} vs 1: {efficiency:.2f}x, so on {args.nproc} "
            f"free cores about {args.nproc * efficiency:.2f}x pairs/s"
        )
    if args.out:
        Path(args.out).write_text(json.dumps({"ratio": ratio, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()

"""One rank of a distributed fine-tuning run, as torchrun starts it:

    python -m embeddings.distributed_worker [--run-id N]

Django is set up before anything of the project is imported (the settings module comes
from the launching process's environment); `embeddings.distributed_finetune.worker_main`
does the rest. torchrun's `record` writes an exception to the error file the launcher reads
(here for a failed set-up; `worker_main` records a rank's own error before its group closes).
"""

import sys


def main() -> None:
    import django
    from torch.distributed.elastic.multiprocessing.errors import record

    django.setup()
    from embeddings.distributed_finetune import worker_main

    record(worker_main)(sys.argv[1:])


if __name__ == "__main__":
    main()

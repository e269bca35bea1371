"""open_clip_train's own trainer with our architectures (shop-tiny, shop-micro) registered.

    python -m embeddings.open_clip_train_main --train-data train.csv --model shop-tiny ...

takes `open_clip_train.main`'s arguments unchanged (run it from the folder `export_pairs
--format csv` wrote, whose image paths are relative to it). `open_clip_library()` first
adds embeddings/model_configs to open_clip's registry, which the stock entry point lacks.
Django-free, like the encoder. Its checkpoints (logs/NAME/checkpoints/epoch_N.pt) load back
through CLIP_CHECKPOINT or `--checkpoint`.
"""

import sys

from embeddings.encoder import open_clip_library

if __name__ == "__main__":
    open_clip_library()
    from open_clip_train.main import main

    main(sys.argv[1:])

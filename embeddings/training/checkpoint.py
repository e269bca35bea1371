"""Checkpoints: trained weights written as safetensors, read back by the encoder's
`load_checkpoint` (open_clip's loader behind our sha256 check), which is re-exported here."""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from embeddings.encoder import file_sha256, load_checkpoint, open_clip_library

open_clip = open_clip_library()  # with our architectures registered

__all__ = ["load_checkpoint", "model_config", "save_checkpoint"]


def save_checkpoint(
    model: torch.nn.Module, path: str | Path, metadata: dict[str, str] | None = None
) -> str:
    """Write the model's weights as fp32 safetensors (atomically), return the file's sha256.

    `load_checkpoint(model, path, sha256=...)` reads it back;
    `ModelSpec(checkpoint=..., checkpoint_sha256=...)` loads it into a `ClipEncoder`.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        name: (t.detach().float() if t.is_floating_point() else t.detach()).cpu().contiguous()
        for name, t in model.state_dict().items()
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": "pt", **(metadata or {})})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return file_sha256(path)


def model_config(architecture: str) -> dict[str, Any]:
    """open_clip's config dict for a registered architecture (e.g. "shop-tiny"), a copy,
    for saving next to a checkpoint."""
    config = open_clip.get_model_config(architecture)
    if config is None:
        raise ValueError(f"unknown open_clip architecture {architecture!r}")
    return copy.deepcopy(config)

"""CLIP encoder: open_clip models loaded once per process, encoding in batches.

Django-free on purpose (like open_clip vs open_clip_train): Django code calls it, tests
and training use it directly.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import open_clip
import torch
from PIL import Image

from catalog.images import (
    DEFAULT_MAX_IMAGE_ASPECT_RATIO,
    DEFAULT_MAX_IMAGE_PIXELS,
    decode_image,
)

logger = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
# Register our own architectures (shop-tiny) beside open_clip's.
open_clip.add_model_config(MODEL_CONFIG_DIR)


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable or does not match its checksum."""


@dataclass(frozen=True)
class ModelSpec:
    """What to load: an architecture plus at most one source of weights.

    `pretrained` is an open_clip tag (downloaded from the model hub when online);
    `checkpoint` a local safetensors or torch file; with neither, weights are a
    fixed-seed random init, identical in every process.
    """

    architecture: str
    pretrained: str = ""
    checkpoint: str = ""
    checkpoint_sha256: str = ""
    seed: int = 0

    def __post_init__(self):
        if self.pretrained and self.checkpoint:
            raise ValueError("give a pretrained tag or a checkpoint file, not both")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_checkpoint(model: torch.nn.Module, path: str | Path, sha256: str = "") -> None:
    """Load a local checkpoint into `model` with open_clip's own loader, after checking the
    file's sha256 when one is given.

    open_clip reads safetensors, or a torch file with weights_only=True (no pickled code
    runs); it unwraps a "state_dict" key and drops DDP's "module." prefix. Every failure
    is a CheckpointError saying why: missing file, checksum mismatch, unsafe or unreadable
    file, weights that do not fit the model.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if sha256:
        actual = file_sha256(path)
        if actual != sha256:
            raise CheckpointError(f"checkpoint {path} has sha256 {actual}, expected {sha256}")
    try:
        open_clip.load_checkpoint(model, str(path), weights_only=True, device="cpu")
    except pickle.UnpicklingError as exc:  # torch's refusal of pickled code, or garbage
        raise CheckpointError(f"cannot load {path} as weights only: {exc}") from exc
    except Exception as exc:
        raise CheckpointError(f"cannot load {path} into {type(model).__name__}: {exc}") from exc


def model_embed_dim(architecture: str) -> int:
    """The vector size of an architecture, read from its config: no weights are loaded."""
    config = open_clip.get_model_config(architecture)
    if config is None:
        raise ValueError(f"unknown CLIP architecture {architecture!r}")
    return int(config["embed_dim"])


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class ClipEncoder:
    """One open_clip model with its preprocessing and tokenizer, ready to embed."""

    def __init__(self, spec: ModelSpec, device: torch.device | str | None = None):
        self.spec = spec
        self.device = torch.device(device) if device else default_device()
        # Half precision on GPU: twice the throughput, and cosine ranking does not notice.
        self.precision = "fp16" if self.device.type == "cuda" else "fp32"
        # Seed before building so a random init is the same in every process.
        torch.manual_seed(spec.seed)
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec.architecture, pretrained=spec.pretrained or None, precision="fp32", device="cpu"
        )
        if spec.checkpoint:
            load_checkpoint(model, spec.checkpoint, sha256=spec.checkpoint_sha256)
        if self.precision == "fp16":
            model = model.half()
        self.model = model.to(self.device).eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(spec.architecture)
        self.image_size = _image_size(self.model)
        self.embed_dim = int(self.model.text_projection.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16 if self.precision == "fp16" else torch.float32

    @torch.inference_mode()
    def encode_images(
        self, images: Sequence[Image.Image | torch.Tensor], batch_size: int = 64
    ) -> np.ndarray:
        """L2-normalised float32 vectors, one row per image: a PIL image, or one already
        through `self.preprocess` (a caller holding many keeps them small that way)."""
        chunks = []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            pixels = torch.stack([i if torch.is_tensor(i) else self.preprocess(i) for i in batch])
            pixels = pixels.to(self.device, dtype=self.dtype, non_blocking=True)
            chunks.append(self.model.encode_image(pixels, normalize=True).float().cpu().numpy())
        return _stack(chunks, self.embed_dim)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text."""
        chunks = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[start : start + batch_size])).to(self.device)
            chunks.append(self.model.encode_text(tokens, normalize=True).float().cpu().numpy())
        return _stack(chunks, self.embed_dim)

    def decode_image(
        self,
        source: bytes | IO[bytes],
        max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        max_aspect_ratio: float = DEFAULT_MAX_IMAGE_ASPECT_RATIO,
    ) -> Image.Image:
        return decode_image(
            source,
            max_pixels=max_pixels,
            max_aspect_ratio=max_aspect_ratio,
            draft_size=self.image_size,
        )


def _stack(chunks: list[np.ndarray], dim: int) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.zeros((0, dim), dtype=np.float32)


def _image_size(model: torch.nn.Module) -> int:
    size = getattr(model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, tuple | list) else size)


_encoders: dict[tuple[ModelSpec, str], ClipEncoder] = {}
_encoders_lock = threading.Lock()


def get_encoder(spec: ModelSpec, device: torch.device | str | None = None) -> ClipEncoder:
    """The process-wide encoder for `spec`: loaded on first use, then reused."""
    key = (spec, str(device or default_device()))
    with _encoders_lock:
        encoder = _encoders.get(key)
        if encoder is None:
            logger.info("loading CLIP %s on %s", spec, key[1])
            encoder = _encoders[key] = ClipEncoder(spec, device=device)
        return encoder

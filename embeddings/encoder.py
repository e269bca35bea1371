"""CLIP encoder: open_clip models loaded once per process, encoding in batches.

Django-free on purpose (like open_clip vs open_clip_train): Django code calls it, tests
and training use it directly. torch and open_clip are imported where a model is built or
run, not with this module: they take seconds to import, and most processes that import
this module (`migrate`, the web server until its first search by meaning) never need them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import pickle
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
from PIL import Image

from catalog.images import (
    DEFAULT_MAX_IMAGE_ASPECT_RATIO,
    DEFAULT_MAX_IMAGE_PIXELS,
    decode_image,
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"


@functools.cache
def open_clip_library():
    """open_clip (and torch), imported on first use, with our own architectures (shop-tiny,
    shop-micro) registered beside its own."""
    import open_clip

    open_clip.add_model_config(MODEL_CONFIG_DIR)
    return open_clip


def _inference_mode(method):
    """torch.inference_mode() as a decorator that imports torch when called, not defined."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        import torch

        with torch.inference_mode():
            return method(*args, **kwargs)

    return wrapper


class _RandomInitNotice(logging.Filter):
    """Drops open_clip's "No pretrained weights loaded ... initialized randomly" for a model
    built from its config on purpose (a fixed-seed init, or the frame a checkpoint loads
    into): it is what was asked for, not a warning. Any other record passes."""

    def __init__(self, architecture: str):
        super().__init__()
        self.message = f"No pretrained weights loaded for model '{architecture}'."

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.message)


def create_model_and_transforms(spec: ModelSpec):
    """open_clip's model and transforms for `spec`: its pretrained tag, else built from the
    architecture's config (quietly: see `_RandomInitNotice`)."""
    open_clip = open_clip_library()
    if spec.pretrained:  # the plain open_clip path; a failed download still warns
        return open_clip.create_model_and_transforms(
            spec.architecture, pretrained=spec.pretrained, precision="fp32", device="cpu"
        )
    notice = _RandomInitNotice(spec.architecture)
    root = logging.getLogger()  # open_clip logs through the logging module's functions
    root.addFilter(notice)
    try:
        return open_clip.create_model_and_transforms(
            spec.architecture, pretrained=None, precision="fp32", device="cpu"
        )
    finally:
        root.removeFilter(notice)


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
        open_clip_library().load_checkpoint(model, str(path), weights_only=True, device="cpu")
    except pickle.UnpicklingError as exc:  # torch's refusal of pickled code, or garbage
        raise CheckpointError(f"cannot load {path} as weights only: {exc}") from exc
    except Exception as exc:
        raise CheckpointError(f"cannot load {path} into {type(model).__name__}: {exc}") from exc


def model_embed_dim(architecture: str) -> int:
    """The vector size of an architecture, read from its config: no weights are loaded (and
    for our own architectures no torch is imported)."""
    own = MODEL_CONFIG_DIR / f"{architecture}.json"
    if own.is_file():
        config = json.loads(own.read_text())
    else:
        config = open_clip_library().get_model_config(architecture)
    if config is None:
        raise ValueError(f"unknown CLIP architecture {architecture!r}")
    return int(config["embed_dim"])


def default_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# What a CPU encoder may compute in (CLIP_CPU_PRECISION); on CUDA it is always fp16.
CPU_PRECISIONS = ("fp32", "bf16", "int8")


def cpu_bf16_supported() -> bool:
    """Whether this CPU has native bf16 (AVX512-BF16 or AMX): without it bf16 is emulated
    and slower than fp32."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _cpu_precision(requested: str) -> str:
    if requested not in CPU_PRECISIONS:
        raise ValueError(
            f"CPU precision must be one of {', '.join(CPU_PRECISIONS)}, got {requested!r}"
        )
    if requested == "bf16" and not cpu_bf16_supported():
        # A mixed fleet shares one setting: a worker without bf16 runs, slower, in fp32.
        logger.warning("this CPU has no native bf16: encoding in fp32 instead")
        return "fp32"
    return requested


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """torch's dynamic int8 quantization of the transformers' MLP Linear layers (two thirds
    of a ViT block's multiply-adds): int8 weights, activations quantized on the fly.

    Only `*.mlp.*` layers: attention projections are read as raw weights by
    F.multi_head_attention_forward (nn.MultiheadAttention, the ResNet's attention pool),
    which a quantized module does not have.
    """
    import torch

    names = {
        name
        for name, module in model.named_modules()
        if type(module) is torch.nn.Linear and ".mlp." in f".{name}."
    }
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which is not installed;
        # eager dynamic quantization still works and is what torchao's int8 config does.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        model = torch.ao.quantization.quantize_dynamic(model, names, dtype=torch.qint8)
    for name, module in model.named_modules():
        if name in names:
            # open_clip asks a block's c_fc for the dtype to cast inputs to; this attribute
            # is its own answer for int8 layers (as with bitsandbytes).
            module.int8_original_dtype = torch.float32
    return model


class ClipEncoder:
    """One open_clip model with its preprocessing and tokenizer, ready to embed."""

    def __init__(
        self,
        spec: ModelSpec,
        device: torch.device | str | None = None,
        cpu_precision: str = "fp32",
    ):
        import torch

        self.spec = spec
        self.device = torch.device(device) if device else default_device()
        # Half precision on GPU: twice the throughput, and cosine ranking does not notice.
        # On CPU fp32 unless asked (bf16, int8: faster, vectors within 0.99 cosine).
        if self.device.type == "cuda":
            self.precision = "fp16"
        else:
            self.precision = _cpu_precision(cpu_precision)
        # Seed before building so a random init is the same in every process.
        torch.manual_seed(spec.seed)
        model, _, preprocess = create_model_and_transforms(spec)
        if spec.checkpoint:
            load_checkpoint(model, spec.checkpoint, sha256=spec.checkpoint_sha256)
        if self.precision == "fp16":
            model = model.half()
        elif self.precision == "bf16":
            # bf16 weights, not autocast: autocast re-casts every weight on every call,
            # which on CPU costs more than it saves (bench/README.md).
            model = model.to(torch.bfloat16)
        elif self.precision == "int8":
            model = quantize_int8(model.eval())
        self.model = model.to(self.device).eval()
        self.preprocess = preprocess
        self.pil_transform, normalize = _split_preprocess(preprocess)
        if normalize is not None:
            self._mean_std = tuple(
                torch.tensor(values, dtype=torch.float32, device=self.device).view(-1, 1, 1)
                for values in (normalize.mean, normalize.std)
            )
        self.tokenizer = open_clip_library().get_tokenizer(spec.architecture)
        self.image_size = _image_size(self.model)
        self.embed_dim = int(self.model.text_projection.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        """What the model takes its pixels in (int8 layers take float32 activations)."""
        import torch

        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision, torch.float32)

    def batch_pixels(self, image: Image.Image) -> torch.Tensor:
        """One image ready to stack into a batch for `encode_batch`: through the PIL part of
        `preprocess` (resize, crop, RGB) as a 3xHxW uint8 tensor, a quarter of the float
        tensor's bytes to hold, pin and copy; the rest of `preprocess` runs on the batch."""
        import torch

        if self.pil_transform is None:
            return self.preprocess(image)
        image = self.pil_transform(image)
        return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)

    @_inference_mode
    def encode_batch(self, pixels: torch.Tensor) -> np.ndarray:
        """Vectors of a stacked batch of `batch_pixels`. A uint8 batch is scaled and
        normalised on the device by the same operations as `preprocess` (torchvision's
        ToTensor and Normalize), so the vectors equal `encode_images`'. A pinned batch is
        copied without blocking."""
        import torch

        pixels = pixels.to(self.device, non_blocking=True)
        if pixels.dtype == torch.uint8:
            # F.normalize's own sub_ and div_, without its check of std on the device
            # (which would make the CPU wait for the copy) or a copy of mean and std.
            mean, std = self._mean_std
            pixels = pixels.to(torch.float32).div(255).sub_(mean).div_(std)
        return self._encode(pixels)

    def _encode(self, pixels: torch.Tensor) -> np.ndarray:
        features = self.model.encode_image(pixels.to(dtype=self.dtype))
        return _unit(features).cpu().numpy()

    @_inference_mode
    def encode_images(
        self, images: Sequence[Image.Image | torch.Tensor], batch_size: int = 64
    ) -> np.ndarray:
        """L2-normalised float32 vectors, one row per image: a PIL image, or one already
        through `self.preprocess` (a caller holding many keeps them small that way)."""
        import torch

        chunks = []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            pixels = torch.stack([i if torch.is_tensor(i) else self.preprocess(i) for i in batch])
            chunks.append(self._encode(pixels.to(self.device, non_blocking=True)))
        return _stack(chunks, self.embed_dim)

    @_inference_mode
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text."""
        chunks = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[start : start + batch_size])).to(self.device)
            chunks.append(_unit(self.model.encode_text(tokens)).cpu().numpy())
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


def _unit(features: torch.Tensor) -> torch.Tensor:
    # Normalised in float32: in fp16 or bf16 the norms come out up to 1e-3 off one. For
    # fp32 this is exactly open_clip's `normalize=True`.
    import torch

    return torch.nn.functional.normalize(features.float(), dim=-1)


def _stack(chunks: list[np.ndarray], dim: int) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.zeros((0, dim), dtype=np.float32)


def _split_preprocess(preprocess) -> tuple:
    """open_clip's eval transform is PIL steps, then to-tensor (/255), then Normalize:
    split, threads can run the PIL steps and the device the rest on a whole batch.
    (None, None) for a transform of another shape: it then runs whole, per image."""
    steps = list(getattr(preprocess, "transforms", []))
    names = [type(step).__name__ for step in steps]
    if len(steps) < 2 or names[-2] not in {"ToTensor", "MaybeToTensor"} or names[-1] != "Normalize":
        return None, None
    import torchvision

    return torchvision.transforms.Compose(steps[:-2]), steps[-1]


def _image_size(model: torch.nn.Module) -> int:
    size = getattr(model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, tuple | list) else size)


_encoders: dict[tuple[ModelSpec, str, str], ClipEncoder] = {}
_encoders_lock = threading.Lock()


def get_encoder(
    spec: ModelSpec, device: torch.device | str | None = None, cpu_precision: str = "fp32"
) -> ClipEncoder:
    """The process-wide encoder for `spec`: loaded on first use, then reused."""
    key = (spec, str(device or default_device()), cpu_precision)
    with _encoders_lock:
        encoder = _encoders.get(key)
        if encoder is None:
            logger.info("loading CLIP %s on %s (CPU precision %s)", spec, key[1], cpu_precision)
            encoder = ClipEncoder(spec, device=device, cpu_precision=cpu_precision)
            _encoders[key] = encoder
        return encoder

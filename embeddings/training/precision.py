"""Mixed precision: which autocast dtype pays on a device, and the GradScaler it needs.

Weights and optimizer state stay fp32 in every case; only the forward pass is autocast.
"""

from __future__ import annotations

import torch

PRECISION_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`; None means plain fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if precision != "auto":
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return None


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX tiles (Xeon Sapphire Rapids and later): bf16 matmuls run
    ~1.6x faster there; elsewhere CPU bf16 is emulated and slower than fp32."""
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except Exception:  # private API: absent or failing on some builds
        return False


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A loss scaler for fp16, whose small range underflows gradients; for any other dtype
    a disabled one, whose scale/unscale_/step/update are plain backward and step."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

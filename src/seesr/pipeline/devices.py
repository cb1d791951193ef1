"""The one device/dtype resolver of the package (CLI, web UI, loaders, tagging, make-pairs).

``auto`` picks CUDA, then MPS, then the CPU; ``auto`` precision is fp16 on CUDA and fp32 elsewhere (fp16 on MPS
and CPU is slower or unsupported for several kernels). An unavailable device is a ``ValueError`` naming it,
never a silent fallback to the CPU.
"""

from __future__ import annotations

from typing import Any

DTYPE_NAMES = ("fp32", "fp16", "bf16")
_ALIASES = {
    "fp32": "float32",
    "float32": "float32",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
}


def _mps_available(torch: Any) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: Any = None) -> Any:
    """``None``/"auto" -> cuda, then mps, then cpu; otherwise the named device, checked to exist.

    Returns:
        ``torch.device``.

    Raises:
        ValueError: an unknown device string, or CUDA/MPS requested where it is not available.
    """
    import torch

    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available(torch):
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"--device {device}: unknown device; expected auto, cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available here (torch {torch.__version__})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    if dev.type == "mps" and not _mps_available(torch):
        raise ValueError(f"--device {device}: MPS is not available here")
    return dev


def resolve_dtype(dtype: Any = None, device: Any = None) -> Any:
    """``torch.dtype`` from a dtype or a name (fp32/fp16/bf16 and their long spellings).

    ``None`` is fp32 (the library's default); "auto" is fp16 on CUDA and fp32 elsewhere.

    Raises:
        ValueError: an unknown name.
    """
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.float32
    if dtype == "auto":
        dev = resolve_device(device) if not isinstance(device, torch.device) else device
        return torch.float16 if dev.type == "cuda" else torch.float32
    name = _ALIASES.get(str(dtype).lower())
    if name is None:
        raise ValueError(f"dtype must be auto, {', '.join(DTYPE_NAMES)}; got {dtype!r}")
    return getattr(torch, name)


def resolve_device_dtype(device: Any = None, dtype: Any = "auto") -> tuple[Any, Any]:
    """(``torch.device``, ``torch.dtype``) for a run: :func:`resolve_device` then :func:`resolve_dtype`."""
    dev = resolve_device(device)
    return dev, resolve_dtype(dtype, dev)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (x86 AVX-512 BF16 or AMX-BF16, from ``torch.cpu``'s cpuinfo).

    Not oneDNN's ``_is_mkldnn_bf16_supported``: that is true on every AVX-512 CPU, which runs bf16 emulated.
    """
    import torch

    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is None:
        return False
    found = capabilities()
    return bool(found.get("avx512_bf16") or found.get("amx_bf16"))

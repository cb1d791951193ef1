"""Strict loading shared by SeeSRUNet and SeeSRControlNet (spec §3; DESIGN.md §2.9: no silent fallbacks).

diffusers' ``from_pretrained`` only *warns* about unexpected keys and may leave missing ones randomly initialised
(spec §3 "Pitfall"). The official release must load with every key consumed and none missing, so our classes
check the loading report and raise one error that lists every offending key.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from seesr.errors import WeightsError


def extend_init_signature(init: Callable[..., Any], parent_init: Callable[..., Any], **extra: Any) -> None:
    """Advertise ``parent_init``'s parameters plus ``extra`` (name=default) as the signature of ``init``.

    diffusers' ``ConfigMixin`` reads the ``__init__`` signature to know which config keys to pass, so a subclass
    that adds a config key and forwards ``**kwargs`` must expose the full parameter list.
    """
    params = list(inspect.signature(parent_init).parameters.values())
    params = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    for name, default in extra.items():
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default))
    # keyword-only parameters must follow positional-or-keyword ones
    params.sort(key=lambda p: p.kind == p.KEYWORD_ONLY)
    init.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]


def raise_on_bad_keys(
    where: Any,
    *,
    missing: Iterable[str] = (),
    unexpected: Iterable[str] = (),
    mismatched: Iterable[Any] = (),
    limit: int = 20,
) -> None:
    """Raise :class:`WeightsError` listing missing / unexpected / mismatched keys, if any."""
    missing, unexpected, mismatched = sorted(missing), sorted(unexpected), list(mismatched)
    if not (missing or unexpected or mismatched):
        return
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", mismatched)):
        if keys:
            shown = ", ".join(str(k) for k in keys[:limit])
            more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
            parts.append(f"{len(keys)} {label} key(s): {shown}{more}")
    raise WeightsError(f"weights at {where} do not match the model: " + "; ".join(parts))


class StrictLoadingMixin:
    """``from_pretrained`` that raises on any missing, unexpected or shape-mismatched key."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any):  # type: ignore[override]
        """diffusers ``from_pretrained`` (local folder or hub id, ``subfolder=``, ``torch_dtype=``, ...), strict.

        Raises:
            WeightsError: the folder's weights do not match the architecture in its ``config.json``.
        """
        want_info = kwargs.pop("output_loading_info", False)
        where = pretrained_model_name_or_path
        if kwargs.get("subfolder"):
            where = f"{where}/{kwargs['subfolder']}"
        model, info = super().from_pretrained(  # type: ignore[misc]
            pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
        )
        raise_on_bad_keys(
            where,
            missing=info["missing_keys"],
            unexpected=info["unexpected_keys"],
            mismatched=info["mismatched_keys"],
        )
        return (model, info) if want_info else model

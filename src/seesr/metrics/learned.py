"""Learned metrics of the paper's Table 2 (LPIPS-Alex, DISTS, NIQE, MUSIQ, MANIQA, CLIPIQA) and FID (§4.1).

All of them run through pyiqa (the optional ``eval`` extra), imported lazily. pyiqa fetches pretrained
weights on first use; offline, that fails. Each metric is loaded on its own and a failure becomes one
:class:`MetricUnavailableError` line naming the metric and where its weights come from, so the remaining
metrics still run.

FID (Heusel et al. 2017) compares two folders: InceptionV3 pool features (pyiqa's FID network, clean-fid
"clean" resizing to 299x299) of each set are summarised by their mean and covariance and

    FID = ||mu_1 - mu_2||² + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})

computed by :func:`frechet_distance` below (in-house, float64).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seesr.errors import SeeSRError
from seesr.metrics.registry import MetricSpec

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

logger = logging.getLogger(__name__)

EVAL_EXTRA_HINT = "install the evaluation extra: pip install 'seesr[eval]'"


class MetricUnavailableError(SeeSRError):
    """A metric cannot be computed here (pyiqa missing, or its pretrained weights cannot be loaded)."""


def weights_cache_dir() -> str:
    """Where the weights are looked for and downloaded: the torch hub dir (``pyiqa/``, ``checkpoints/``,
    ``clip/`` below it; timm weights go to the Hugging Face cache)."""
    import torch.hub

    return str(Path(torch.hub.get_dir()))


def _create_pyiqa_metric(spec: MetricSpec, device: str) -> Any:
    """Build the pyiqa model for ``spec`` (this is where weights are downloaded or read from the cache)."""
    import pyiqa

    return pyiqa.create_metric(spec.pyiqa_name, device=device, as_loss=False, **spec.pyiqa_opts)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def load_learned_metric(spec: MetricSpec, device: str = "cpu") -> Any:
    """Load a pyiqa metric, turning every failure into one clear line.

    Args:
        spec: a learned metric of :data:`seesr.metrics.registry.METRICS`.
        device: torch device string for the model.

    Returns:
        The pyiqa model (called as ``model(sr)`` or ``model(sr, gt)`` with (B,3,H,W) tensors in [0,1]).

    Raises:
        MetricUnavailableError: pyiqa is not installed, or the model/weights cannot be loaded.
    """
    if spec.pyiqa_name is None:
        raise ValueError(f"{spec.name} is computed in-house, not through pyiqa")
    try:
        return _create_pyiqa_metric(spec, device)
    except ModuleNotFoundError as err:
        if err.name == "pyiqa":
            raise MetricUnavailableError(f"{spec.label}: pyiqa is not installed; {EVAL_EXTRA_HINT}") from err
        raise MetricUnavailableError(
            f"{spec.label}: pyiqa cannot import {err.name!r} ({_first_line(err)}); {EVAL_EXTRA_HINT} "
            "(it pins setuptools<81 for CLIPIQA's pkg_resources)"
        ) from err
    except Exception as err:  # any download/load failure: report it for this metric only
        raise MetricUnavailableError(
            f"{spec.label}: pretrained weights unavailable ({_first_line(err)}); they come from "
            f"{spec.weights}; cached under {weights_cache_dir()} (run once online, or copy the files there)"
        ) from err


def score_batch(model: Any, sr: torch.Tensor, gt: torch.Tensor | None = None) -> list[float]:
    """Per-image scores of a loaded metric.

    Args:
        model: from :func:`load_learned_metric`.
        sr: (B,3,H,W) in [0,1], RGB.
        gt: (B,3,H,W) in [0,1], RGB, for full-reference metrics; None for no-reference ones.

    Returns:
        B floats.
    """
    import torch

    with torch.no_grad():
        out = model(sr) if gt is None else model(sr, gt)
    return [float(v) for v in torch.as_tensor(out).detach().flatten().cpu()]


# ---------------------------------------------------------------------------------------------- FID


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``d² = ||mu1 - mu2||² + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^{1/2})``. The trace of the matrix square root is
    computed as ``sum sqrt(eig(S1^{1/2} S2 S1^{1/2}))`` (a symmetric PSD matrix with the same eigenvalues as
    S1 S2), which avoids complex round-off of a general ``sqrtm``.

    Args:
        mu1, mu2: (D,) means.
        sigma1, sigma2: (D,D) symmetric positive semi-definite covariances.

    Returns:
        The squared distance d² (this is what "FID" reports), >= 0 up to round-off.

    Raises:
        ValueError: on mismatched dimensions.
    """
    import numpy as np

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.shape[0],) * 2:
        raise ValueError(
            f"mismatched Gaussian parameters: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}"
        )
    s1 = (s1 + s1.T) / 2
    s2 = (s2 + s2.T) / 2
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of (N,D) features (N >= 2)."""
    import numpy as np

    feats = np.asarray(features, np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 feature vectors of shape (N,D), got {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


FeatureExtractor = Callable[[Sequence[Path]], "np.ndarray"]


def _inception_extractor(device: str) -> FeatureExtractor:
    """pyiqa's FID InceptionV3 (2048-d pool features) with clean-fid resizing, as a files -> (N,2048) function."""
    import numpy as np
    import torch

    net = _create_pyiqa_metric(_fid_spec(), device).net.model
    from pyiqa.archs.fid_arch import ResizeDataset

    def extract(files: Sequence[Path]) -> np.ndarray:
        loader = torch.utils.data.DataLoader(
            ResizeDataset([str(f) for f in files], mode="clean", size=(299, 299)), batch_size=8, num_workers=0
        )
        feats = []
        with torch.no_grad():
            for batch in loader:
                # clean-fid convention: uint8-range input mapped to [-1,1], no further normalisation
                out = net(((batch - 128) / 128).to(device), False, False)[0]
                feats.append(out.reshape(out.shape[0], -1).cpu().numpy())
        return np.concatenate(feats)

    return extract


def _fid_spec() -> MetricSpec:
    from seesr.metrics.registry import METRICS

    return METRICS["fid"]


def load_fid_extractor(device: str = "cpu") -> FeatureExtractor:
    """The FID feature extractor, or :class:`MetricUnavailableError` with one clear line."""
    spec = _fid_spec()
    try:
        return _inception_extractor(device)
    except ModuleNotFoundError as err:
        if err.name == "pyiqa":
            raise MetricUnavailableError(f"{spec.label}: pyiqa is not installed; {EVAL_EXTRA_HINT}") from err
        raise MetricUnavailableError(f"{spec.label}: {_first_line(err)}; {EVAL_EXTRA_HINT}") from err
    except Exception as err:
        raise MetricUnavailableError(
            f"{spec.label}: pretrained weights unavailable ({_first_line(err)}); they come from {spec.weights}; "
            f"cached under {weights_cache_dir()} (run once online, or copy the files there)"
        ) from err


def fid_files(files1: Sequence[Path], files2: Sequence[Path], extractor: FeatureExtractor) -> float:
    """FID between two sets of image files (restored vs reference).

    Raises:
        ValueError: if either set has fewer than 2 images.
    """
    mu1, s1 = gaussian_stats(extractor(files1))
    mu2, s2 = gaussian_stats(extractor(files2))
    return frechet_distance(mu1, s1, mu2, s2)

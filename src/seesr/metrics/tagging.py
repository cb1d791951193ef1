"""Tagging metrics for a tagger on a labelled set (paper §4.3, eq. 3 and Table 6).

For C classes and a set of images, with, for class i,

* ``N_i^p`` the number of images predicted to carry label i,
* ``N_i^t`` the number of those predictions that are correct (the image's ground truth has label i),
* ``N_i^g`` the number of images whose ground truth has label i,

the paper's eq. 3 defines the overall precision and recall

    OP = sum_i N_i^t / sum_i N_i^p        OR = sum_i N_i^t / sum_i N_i^g

and the per-class precision and recall are ``CP_i = N_i^t / N_i^p`` and ``CR_i = N_i^t / N_i^g`` (undefined,
reported as NaN, when the denominator is 0).

AP of class i ranks the images by the tagger's score for i (descending) and averages the precision over
the recall steps (non-interpolated AP; tied scores form one threshold, so the value does not depend on the
order of tied images):

    AP_i = sum_n (R_n - R_{n-1}) P_n

over the distinct score thresholds n, with P_n, R_n the precision and recall of "score >= threshold_n".
mAP is the mean of AP_i over the classes with at least one ground-truth image. The paper's Table 6 reports
OP/OR as fractions and AP in percent.

Only the classes in ``classes`` are scored: a predicted tag outside that vocabulary (e.g. a RAM tag with no
COCO counterpart) is ignored, since the ground truth cannot say whether it is right.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TaggingResult:
    """Tagging scores on one labelled set.

    Attributes:
        op: overall precision (eq. 3), in [0,1].
        or_: overall recall (eq. 3), in [0,1].
        map: mean AP over classes with ground truth, in [0,1]; NaN when no scores were given.
        n_images: images scored.
        per_class: class -> {"precision", "recall", "ap", "n_pred", "n_true", "n_gt"}.
    """

    op: float
    or_: float
    map: float
    n_images: int
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "OP": self.op,
            "OR": self.or_,
            "mAP": self.map,
            "n_images": self.n_images,
            "per_class": self.per_class,
        }


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def average_precision(scores: Sequence[float], relevant: Sequence[bool]) -> float:
    """Non-interpolated average precision of one class, ``sum_n (R_n - R_{n-1}) P_n``.

    Args:
        scores: the tagger's score for this class on each image (higher = more confident).
        relevant: whether each image's ground truth carries this class.

    Returns:
        AP in [0,1]; NaN when no image is relevant.

    Raises:
        ValueError: if the two sequences differ in length.
    """
    if len(scores) != len(relevant):
        raise ValueError(f"scores and relevant differ in length: {len(scores)} vs {len(relevant)}")
    n_pos = sum(bool(r) for r in relevant)
    if n_pos == 0:
        return math.nan
    pairs = sorted(zip(scores, relevant), key=lambda p: -p[0])
    ap = 0.0
    tp = fp = 0
    prev_recall = 0.0
    i = 0
    while i < len(pairs):
        # consume all images tied at this score as one threshold
        s = pairs[i][0]
        while i < len(pairs) and pairs[i][0] == s:
            if pairs[i][1]:
                tp += 1
            else:
                fp += 1
            i += 1
        recall = tp / n_pos
        ap += (recall - prev_recall) * (tp / (tp + fp))
        prev_recall = recall
    return ap


def tagging_metrics(
    predictions: Mapping[str, Iterable[str]],
    ground_truth: Mapping[str, Iterable[str]],
    classes: Sequence[str] | None = None,
    scores: Mapping[str, Mapping[str, float]] | None = None,
) -> TaggingResult:
    """OP, OR (eq. 3), per-class precision/recall and mAP of a tagger.

    Args:
        predictions: image id -> predicted tags (the thresholded output of the tagger).
        ground_truth: image id -> true tags. Must have exactly the same image ids as ``predictions``.
        classes: the vocabulary scored; defaults to every tag in ``ground_truth``. Tags outside it are ignored.
        scores: optional image id -> {tag: score}; needed for AP (a missing tag scores -inf).

    Returns:
        A :class:`TaggingResult`.

    Raises:
        ValueError: if the image ids of predictions, ground truth or scores differ, or nothing is labelled.
    """
    pred_ids, gt_ids = set(predictions), set(ground_truth)
    if pred_ids != gt_ids:
        missing = sorted(gt_ids - pred_ids)[:5]
        extra = sorted(pred_ids - gt_ids)[:5]
        raise ValueError(
            f"predictions and ground truth must cover the same images; without prediction: {missing}, "
            f"without ground truth: {extra}"
        )
    if scores is not None and set(scores) != gt_ids:
        raise ValueError(
            f"scores must cover the same images as the ground truth; differ on {sorted(set(scores) ^ gt_ids)[:5]}"
        )
    if not gt_ids:
        raise ValueError("no images to score: the ground truth is empty")
    gt = {k: set(v) for k, v in ground_truth.items()}
    if classes is None:
        classes = sorted(set().union(*gt.values()))
    vocab = list(dict.fromkeys(classes))
    vocab_set = set(vocab)
    pred = {k: set(v) & vocab_set for k, v in predictions.items()}
    gt = {k: v & vocab_set for k, v in gt.items()}
    ids = sorted(gt_ids)

    per_class: dict[str, dict[str, float]] = {}
    sum_t = sum_p = sum_g = 0
    aps: list[float] = []
    for c in vocab:
        n_p = sum(c in pred[i] for i in ids)
        n_t = sum(c in pred[i] and c in gt[i] for i in ids)
        n_g = sum(c in gt[i] for i in ids)
        sum_t, sum_p, sum_g = sum_t + n_t, sum_p + n_p, sum_g + n_g
        ap = math.nan
        if scores is not None:
            ap = average_precision(
                [float(scores[i].get(c, -math.inf)) for i in ids], [c in gt[i] for i in ids]
            )
            if n_g:
                aps.append(ap)
        per_class[c] = {
            "precision": _ratio(n_t, n_p),
            "recall": _ratio(n_t, n_g),
            "ap": ap,
            "n_pred": n_p,
            "n_true": n_t,
            "n_gt": n_g,
        }
    if sum_g == 0:
        raise ValueError(
            f"none of the {len(ids)} images has a ground-truth label among the {len(vocab)} classes"
        )
    return TaggingResult(
        op=_ratio(sum_t, sum_p),
        or_=_ratio(sum_t, sum_g),
        map=sum(aps) / len(aps) if aps else math.nan,
        n_images=len(ids),
        per_class=per_class,
    )

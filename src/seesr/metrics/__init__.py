"""seesr.metrics: the evaluation protocol of the paper (§4.1 metrics, Table 2; §4.3 tagging, eq. 3, Table 6).

Modules (import them directly; nothing heavy is imported here):

* :mod:`~seesr.metrics.fidelity` — PSNR/SSIM on the BT.601 Y channel, in-house (equal to pyiqa's values).
* :mod:`~seesr.metrics.learned` — LPIPS, DISTS, NIQE, MUSIQ, MANIQA, CLIPIQA via pyiqa; FID.
* :mod:`~seesr.metrics.tagging` — OP/OR (eq. 3), per-class precision/recall, mAP.
* :mod:`~seesr.metrics.evaluate` — ``evaluate_dirs(sr_dir, gt_dir, ...)``.
* :mod:`~seesr.metrics.report` — terminal table, CSV, JSON, Markdown (Table 2 / Table 6 layout), plot.
* :mod:`~seesr.metrics.testsets` — DIV2K-Val and COCO-val builders, COCO -> RAM tag table.
"""

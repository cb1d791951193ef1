"""The one run layer under ``seesr upscale``, ``seesr tag``, ``seesr ui`` and the Python API (DESIGN.md §3).

Each behaviour a front-end needs lives here once:

- :mod:`seesr.run.settings` — preset + sidecar + overrides -> ``SamplingConfig`` / ``TilingConfig`` (one tile
  overlap rule, tile sizes given in image pixels everywhere a person types them);
- :mod:`seesr.pipeline.devices` — the one device/dtype resolver (it lives in ``pipeline`` so loaders use it too);
- :mod:`seesr.run.guard` — input checks before any model work: header probe, pixel caps, the processing size of
  small inputs that are enlarged first, output options;
- :mod:`seesr.run.sources` — where the weights come from (folder, official parts, environment, default folder)
  and loading the pipeline from them;
- :mod:`seesr.run.job` — run one image and write image + sidecar;
- :mod:`seesr.run.sidecar` — the one sidecar schema, its reader and writer, and ``versions()``.

Modules import torch only inside functions, so ``seesr --help`` stays instant.
"""

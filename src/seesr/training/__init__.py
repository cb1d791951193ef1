"""Training of both SeeSR stages with accelerate (paper §3-4.1; spec §4.4, §5; docs/training.md).

* :mod:`seesr.training.config` — ``TrainSeeSRConfig``, ``TrainDAPEConfig`` (+ ``RunConfig``, ``TrainDataConfig``,
  ``RAMConfig``) and ``load_train_config``.
* :mod:`seesr.training.steps` — the pure per-step losses ``seesr_training_step`` / ``dape_training_step`` with
  injectable draws, and the RAM input recipes.
* :mod:`seesr.training.train_seesr` / :mod:`seesr.training.train_dape` — the loops (``train_seesr``,
  ``train_dape``); :mod:`seesr.training.checkpoint` — accelerate set-up, optimiser, LR schedule, resumable
  checkpoints; :mod:`seesr.training.data` — step-addressed data order and online degradation;
  :mod:`seesr.training.models` — model set-up and the trainable set.
"""

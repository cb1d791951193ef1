"""Training of both SeeSR stages with accelerate (paper §3-4.1; spec §4.4, §5; docs/training.md).

* :mod:`seesr.training.config` — ``TrainSeeSRConfig``, ``TrainDAPEConfig`` (+ ``RunConfig``, ``TrainDataConfig``,
  ``RAMConfig``) and ``load_train_config``.
* :mod:`seesr.training.steps` — the pure per-step losses ``seesr_training_step`` / ``dape_training_step`` with
  injectable draws, and the RAM input recipes.
* :mod:`seesr.training.train_seesr` / :mod:`seesr.training.train_dape` — the two stages (``train_seesr``,
  ``train_dape``): set-up and a per-micro-batch step over the one shared loop :mod:`seesr.training.loop`
  (accumulate / no_sync / clip / step / log / checkpoint); :mod:`seesr.training.checkpoint` — accelerate set-up,
  optimiser, LR schedule, resumable checkpoints; :mod:`seesr.training.data` — step-addressed data order and online
  degradation; :mod:`seesr.training.models` — stage-2 model set-up and the trainable set;
  :mod:`seesr.training.dape_models` — the stage-1 teacher and LoRA student.
"""

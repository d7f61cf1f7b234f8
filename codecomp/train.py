"""`codecomp-train`: train a model with Lightning, configured by Hydra (conf/train.yaml).

codecomp-train                                   # Char-LSTM on the small recipe, on CPU
codecomp-train experiment=char_lstm_quick        # the bounded default run of `make demo`
codecomp-train -m model.hidden=256,512           # a sweep, one run folder per setting
codecomp-train debug=fast_dev_run trainer=gpu    # one batch of each stage on a GPU
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from codecomp import CONFIG_DIR

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (resuming from last.ckpt if asked and present), then test the best checkpoint.

    Returns the trainer's final metrics and where the checkpoints and logs went.
    """
    pl.seed_everything(cfg.seed, workers=True)
    datamodule: pl.LightningDataModule = instantiate(cfg.model.datamodule)
    module: pl.LightningModule = instantiate(cfg.model.module)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    last = Path(cfg.ckpt_dir) / "last.ckpt"
    resume_from = str(last) if cfg.resume and last.is_file() else None
    if resume_from:
        log.info("resuming from %s", resume_from)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.test_after_fit:
        checkpointing = trainer.checkpoint_callback
        best = getattr(checkpointing, "best_model_path", "") if checkpointing else ""
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    result = {"metrics": metrics, "ckpt_dir": str(cfg.ckpt_dir), "log_dir": trainer.log_dir}
    log.info("checkpoints: %s  logs: %s  metrics: %s", cfg.ckpt_dir, trainer.log_dir, metrics)
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns val/bpc so that Hydra sweepers can optimise it."""
    metrics = train(cfg)["metrics"]
    return metrics.get("val/bpc")


if __name__ == "__main__":
    main()

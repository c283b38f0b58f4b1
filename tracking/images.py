"""The validation overlays that every backend logs: predicted once per epoch and shared, whatever the number of
backends, every `logging.image_every` validations, for the first few validation images."""
from __future__ import annotations

import numpy as np
import torch

from analysis.multiclass import label_overlay
from analysis.overlay import overlay_row
from trainer.predictor import to_full_size

N_IMAGES = 3  # a few images: enough to see progress, cheap next to a validation pass


class ValidationImages:
    def __init__(self, image_every: int):
        self.image_every = image_every
        self.validations = 0
        self._epoch, self._images = None, None

    def get(self, trainer, record: dict) -> dict[str, np.ndarray] | None:
        """{"val/<image key>": (H, W, 3) uint8} for this epoch when it is an image epoch, else None."""
        if record.get(f"val_{trainer.mode.metric}") is None or not self.image_every:
            return None
        if record["epoch"] != self._epoch:
            self._epoch, self.validations = record["epoch"], self.validations + 1
            self._images = self._render(trainer) if self.validations % self.image_every == 0 else None
        return self._images

    @torch.no_grad()
    def _render(self, trainer) -> dict[str, np.ndarray]:
        dataset, cache = trainer.val_loader.dataset, trainer.data.cache
        items = [dataset[n] for n in range(min(N_IMAGES, len(dataset)))]
        if not items:
            return {}
        trainer.predictor.model.eval()  # the model just validated (EMA weights when kept)
        probs = trainer.predictor(torch.stack([item["image"] for item in items]))
        trainer.model.train()
        out = {}
        for p, item in zip(probs, items):
            i = item["index"]
            image = cache.image(i)
            if trainer.mode.label_kind == "map":  # one label per pixel: argmax label maps, errors in red
                pred = trainer.mode.labels([(p, 1.0)], image.shape[:2]).cpu().numpy()
                out[f"val/{cache.keys[i]}"] = label_overlay(image, np.asarray(cache.labels(i)), pred,
                                                               len(trainer.classes))
                continue
            pred = (to_full_size(p, image.shape) > trainer.cfg.trainer.threshold).cpu().numpy()
            out[f"val/{cache.keys[i]}"] = overlay_row(np.asarray(image), cache.mask(i).astype(bool), pred,
                                                      classes=trainer.classes)
        return out

"""Task modes, the way segmentation-models-pytorch threads its modes through losses and metrics: a mode owns the
activation, the losses' mode, the validation metric and how probabilities become masks. The trainer, predictor,
threshold tuning and inference ask the mode; they never test its name.

- multilabel (modes/multilabel.py): sigmoid per class, a pixel may hold several classes; bit-plane targets; mean
  Dice per image.
- multiclass (modes/multiclass.py): softmax over the classes (the first is the background), one label per pixel;
  label-map targets; mIoU from a confusion matrix over the whole validation set; argmax.
- binary (modes/binary.py): the multilabel mode with one foreground class, smp's binary losses; foreground Dice
  and IoU per image.

The folder also holds what turns model-resolution probabilities into full-size masks and scores (fullsize.py,
dice.py, miou.py, crf.py): the modes' own machinery, below the task layouts that write submissions with it.
"""
from __future__ import annotations

from modes.binary import Binary
from modes.multiclass import Multiclass
from modes.multilabel import Multilabel
from utils.errors import ConfigError

MODES = {"multilabel": Multilabel, "multiclass": Multiclass, "binary": Binary}


def build_mode(name: str):
    if name not in MODES:
        raise ConfigError(f"task.mode: unknown mode {name!r} (choose from {', '.join(MODES)})")
    return MODES[name]()

"""Submission formats (`task.submission`): the CSV layout a prediction is written in, and its validator.

- handbone: `image_name,class,rle`, one row per image and class, thresholded sigmoid masks (utils/submission.py).
- trash: `image_id,PredictionString`, one row per test.json image, the argmax label map at 256x256
  (utils/trash_submission.py); optionally DenseCRF first (predict.crf) and label-map PNGs (--save-masks).

inference.py, ensemble.py and the tests ask the format; adding one means a class here and an entry in SUBMISSIONS.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from data.formats import build_format
from utils.errors import UserError


class HandboneSubmission:
    name = "handbone"

    def test_samples(self, task, data_root) -> list:
        """The test images the CSV must list (found, not empty, file names unique), checked before predicting."""
        from utils.submission import list_test_images

        return list_test_images(data_root)

    def write(self, members: list, data_root, out, runtime, thresholds=None, save_probs=None, save_masks=None,
              num_workers: int = 2, progress: bool = True) -> int:
        from trainer.inference import write_submission

        if save_masks is not None:
            raise UserError("--save-masks writes label maps of the trash submission; the hand-bone CSV holds RLE "
                            "masks (use --save-probs for the probabilities)")
        return write_submission(members, data_root, out, thresholds, runtime, save_probs=save_probs,
                                num_workers=num_workers, progress=progress)

    def validate(self, csv_path, data_root, classes: list[str]) -> list[str]:
        from utils.submission import validate_submission

        return validate_submission(csv_path, data_root, classes)

    def hard_vote(self, csvs: list, min_votes: int | None, out, data_root, classes: list[str]) -> str:
        """A pixel is kept where at least `min_votes` submissions agree; returns the line to print."""
        from utils.submission import hard_vote, read_test_image_sizes

        if min_votes is None:
            raise UserError("--csvs needs --min-votes N")
        if not 1 <= min_votes <= len(csvs):
            raise UserError(f"--min-votes: {min_votes} is not between 1 and the {len(csvs)} submissions")
        if not data_root:
            raise UserError("--csvs needs --data ROOT (the test images give each mask's size)")
        hard_vote(csvs, min_votes, out, classes, read_test_image_sizes(data_root))
        return f"wrote {out}: pixels kept where at least {min_votes} of {len(csvs)} submissions agree"


class TrashSubmission:
    name = "trash"

    def test_samples(self, task, data_root) -> list:
        """The images of test.json, each found on disk, checked before predicting."""
        return build_format(task.format, task.classes).test_samples(data_root)

    def write(self, members: list, data_root, out, runtime, thresholds=None, save_probs=None, save_masks=None,
              num_workers: int = 2, progress: bool = True) -> int:
        """Softmax probabilities averaged over TTA, windows and members at each image's own size, optionally
        refined by DenseCRF, then argmax; rows in test.json order."""
        from trainer.crf import dense_crf
        from trainer.inference import check_members, iter_full_size_probs
        from trainer.modes import dense_probs
        from utils.trash_submission import TrashSubmissionWriter, save_label_png

        classes = check_members(members)
        task = next((m.cfg.task for m in members if hasattr(m, "cfg")), None)
        fmt = build_format(task.format if task else "coco", classes)
        crf = next((m.cfg.predict.crf for m in members if hasattr(m, "cfg")), None)
        samples = fmt.test_samples(data_root)
        if save_probs is not None:
            Path(save_probs).mkdir(parents=True, exist_ok=True)
        with TrashSubmissionWriter(out) as writer:
            for sample, probs in iter_full_size_probs(members, samples, runtime, num_workers, progress,
                                                      Path(save_probs) if save_probs else None,
                                                      read_image=fmt.read_image):
                mean = dense_probs(probs)
                if crf is not None:
                    mean = torch.from_numpy(dense_crf(
                        fmt.read_image(sample.image), mean.cpu().numpy(), crf.iterations, crf.gaussian_sxy,
                        crf.gaussian_compat, crf.bilateral_sxy, crf.bilateral_srgb, crf.bilateral_compat))
                labels = mean.argmax(0).to(torch.uint8).cpu().numpy()
                writer.write_image(sample.key, labels)
                if save_masks is not None:
                    save_label_png(save_masks, sample.key, labels)
        if save_probs is not None:
            (Path(save_probs) / "probs.json").write_text(json.dumps({"classes": classes}))
        return len(samples)

    def validate(self, csv_path, data_root, classes: list[str]) -> list[str]:
        from data.coco import split_path
        from utils.trash_submission import validate_trash_submission

        return validate_trash_submission(csv_path, split_path(data_root, "test"), len(classes))

    def hard_vote(self, csvs: list, min_votes: int | None, out, data_root, classes: list[str]) -> str:
        """Each pixel's majority label (a tie goes to the lowest label); --min-votes does not apply."""
        from utils.trash_submission import hard_vote_labels

        if min_votes is not None:
            raise UserError("--min-votes: the trash submission votes each pixel's majority label; leave it out")
        count = hard_vote_labels(csvs, out, len(classes))
        return f"wrote {out}: {count} images, per-pixel majority label of {len(csvs)} submissions"


SUBMISSIONS = {"handbone": HandboneSubmission, "trash": TrashSubmission}
DEFAULT_SUBMISSION = {"handbone": "handbone", "coco": "trash"}  # a format's competition CSV


def build_submission(task):
    """The submission format of a TaskConfig: task.submission, or the format's own when it is null."""
    name = task.submission or DEFAULT_SUBMISSION[task.format]
    return SUBMISSIONS[name]()

"""Tasks: what is segmented and how it lies on disk. A task is a layout, a mode and a submission, chosen by name in
the config (`task.format`, `task.mode`, `task.submission`); the generic machinery (cache, pipeline, trainer,
predictor, inference, analysis, campaigns) asks the Task and never names a layout.

- Layouts, one folder each, holding everything the layout knows (reading, splitting, rasterizing, its submission
  writer, reader and validator, its synthetic generator and its pseudo-label writer):
  handbone (tasks/handbone/), coco (tasks/coco/), or the user's own as `package.module:Name` or
  `path/file.py:Name` (README, "Add your own layout"); the registry is tasks/registry.py.
- Modes (modes/): multilabel, multiclass.
- Submissions: each layout's competition format (handbone: RLE rows; trash: PredictionString).
"""

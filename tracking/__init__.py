"""Tracking backends (TensorBoard, MLflow, wandb) and webhook notifications, as trainer callbacks chosen by
`logging.backends` and `logging.notify` (metrics.jsonl is always written by the trainer itself): checks.py says
whether they can run (light, before any work), build.py builds one run's callbacks."""

"""Experiment campaigns on Optuna: a space or a queue of configs, drawn by any number of workers from one study."""

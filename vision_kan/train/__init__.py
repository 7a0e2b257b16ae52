"""What main.py and engine.py use: data, samplers, losses, EMA, checkpoints, config, distributed set-up, KAN
training steps (grid updates, regularisation), progress and the run log. Each module is usable and testable alone."""

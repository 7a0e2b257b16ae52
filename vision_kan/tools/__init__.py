"""Command-line tools run as `python -m vision_kan.tools.NAME`: compare, quantize, plot_kan, convert.

They share helpers from vision_kan.train (offline_eval, checkpoint, config), never from each other."""

"""Training, evaluation and inference around the model; no argument parsing, no printing."""

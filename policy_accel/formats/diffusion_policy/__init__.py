"""Diffusion Policy workspace checkpoints (.ckpt): the safe reader and the writer used by tests and examples."""

"""Checkpoint formats: each reads a saved policy (the project's safetensors, Diffusion Policy .ckpt, LeRobot folders)."""

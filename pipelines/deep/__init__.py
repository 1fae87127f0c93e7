"""PyTorch plumbing shared by every deep detector: one training loop, scaling, model files.

Importing this package imports torch; only the deep detectors' methods do, so scoring with a
scikit-learn or numpy detector never loads it. Plain torch and numpy only: the GPU machines
run this code with their own torch (2.11) and nothing else installed.
"""

"""Inference: prediction (sliding window, writers), explanations (CAM, Grad-CAM) and localisation metrics."""

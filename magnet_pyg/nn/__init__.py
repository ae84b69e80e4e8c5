"""Layers usable alone in any PyG model."""

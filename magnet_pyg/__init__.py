"""magnet_pyg: PyG-native multimodal recommendation (MAGNET, peers, baselines)."""
__version__ = "0.1.0"

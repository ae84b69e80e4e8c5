"""magnet_pyg: PyG-native multimodal recommendation (MAGNET, peers, baselines)."""
__version__ = "0.1.0"


def __getattr__(name):
    """``magnet_pyg.load_run`` (imported on first use)."""
    if name == "load_run":
        from .interpret.run import load_run
        return load_run
    raise AttributeError(f"module 'magnet_pyg' has no attribute '{name}'")

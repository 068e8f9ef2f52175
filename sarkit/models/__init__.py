"""Models: shared building blocks, one file per model, and the registry that names them."""

from __future__ import annotations

import importlib

from sarkit.models.registry import MODELS, NETWORKS, build_network, get_model, model_names, register_model, register_network

#: Modules that register models or networks when imported (one file per model).
_MODULES: tuple[str, ...] = ("cyclegan", "cut", "qs_attn", "segmenter", "cyclegan_sc", "pix2pix", "pix2pix_clip",
                             "con_diffusion", "stylegan2", "gan_prior", "nafnet", "regression", "fusion",
                             "sr_diffusion")

_loaded = False


def load_all() -> None:
    """Import every model module so that its registrations run (idempotent)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _MODULES:
        importlib.import_module(f"{__name__}.{mod}")


__all__ = ["MODELS", "NETWORKS", "build_network", "get_model", "model_names", "register_model",
           "register_network", "load_all"]

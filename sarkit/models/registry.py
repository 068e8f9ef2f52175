"""One registry of trainable models (by CLI name) and one of network architectures (for exported checkpoints).

A model file registers its trainer class with ``@register_model("pix2pix")``; a network architecture that can
be rebuilt from an exported checkpoint registers a builder with ``@register_network("unet")``.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from sarkit.errors import InputError

MODELS: dict[str, type] = {}
NETWORKS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[type], type]:
    """Class decorator: make a model trainable as ``sarkit train --model NAME``."""

    def deco(cls: type) -> type:
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        cls.name = name
        MODELS[name] = cls
        return cls

    return deco


def get_model(name: str) -> type:
    """The model class registered as ``name`` (``InputError`` listing the valid names otherwise)."""
    from sarkit.models import load_all

    load_all()
    if name not in MODELS:
        raise InputError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def model_names() -> list[str]:
    """Names of every registered model."""
    from sarkit.models import load_all

    load_all()
    return sorted(MODELS)


def register_network(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator for a builder ``f(**kwargs) -> nn.Module`` used to rebuild exported networks."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in NETWORKS:
            raise ValueError(f"network {name!r} registered twice")
        NETWORKS[name] = fn
        return fn

    return deco


def build_network(arch: str, kwargs: dict[str, Any]) -> nn.Module:
    """Rebuild a network from its registered architecture name and keyword arguments."""
    from sarkit.models import load_all

    load_all()
    if arch not in NETWORKS:
        raise InputError(f"checkpoint uses unknown architecture {arch!r} (known: {', '.join(sorted(NETWORKS))})")
    return NETWORKS[arch](**kwargs)


class Identity(nn.Module):
    """Returns its input unchanged (for tests of translate/eval without a trained model)."""

    def __init__(self, channels: int = 2) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x):  # noqa: D401
        return x


@register_network("identity")
def _identity(channels: int = 2) -> nn.Module:
    return Identity(channels)

"""Providers build and reset a lab. A new provider is one module plus one line here."""

from __future__ import annotations

import inspect
from importlib import import_module

from rdplab.errors import ProviderError
from rdplab.providers.base import Provider

PROVIDERS = {
    "sim": "rdplab.providers.sim:SimProvider",
    "vagrant": "rdplab.providers.vagrant:VagrantProvider",
    "inventory": "rdplab.providers.inventory:InventoryProvider",
    "netns": "rdplab.providers.netns:NetnsProvider",
}


def get_provider(name: str, **options: object) -> Provider:
    """The provider ``name``, given those of ``options`` its constructor takes (the
    plugin passes every provider's options; ``None`` means not given)."""
    try:
        target = PROVIDERS[name]
    except KeyError:
        raise ProviderError(
            f"unknown provider {name!r} (known: {', '.join(sorted(PROVIDERS))})"
        ) from None
    module, cls_name = target.split(":")
    cls = getattr(import_module(module), cls_name)
    accepted = inspect.signature(cls).parameters
    given = {k: v for k, v in options.items() if v is not None and k in accepted}
    provider: Provider = cls(**given)
    return provider


__all__ = ["PROVIDERS", "Provider", "get_provider"]

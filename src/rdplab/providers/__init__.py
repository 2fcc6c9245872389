"""Providers build and reset a lab. A new provider is one module plus one line here."""

from __future__ import annotations

from importlib import import_module

from rdplab.errors import ProviderError
from rdplab.providers.base import Provider

PROVIDERS = {
    "sim": "rdplab.providers.sim:SimProvider",
}


def get_provider(name: str, **options: object) -> Provider:
    try:
        target = PROVIDERS[name]
    except KeyError:
        raise ProviderError(
            f"unknown provider {name!r} (known: {', '.join(sorted(PROVIDERS))})"
        ) from None
    module, cls = target.split(":")
    provider: Provider = getattr(import_module(module), cls)(**options)
    return provider


__all__ = ["PROVIDERS", "Provider", "get_provider"]

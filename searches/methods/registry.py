"""Analysis methods by name, as the campaign file names them (``searches: [{method: ...}]``).

Methods are imported when first asked for: a campaign of scans never imports torch, and a Ray
worker pays only for the methods it runs.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module

from searches.methods.base import SearchMethod

METHODS: dict[str, str] = {
    "scan": "searches.methods.scan:scan",
    "bumphunt": "searches.methods.bumphunt:bumphunt",
    "autoencoder": "searches.methods.autoencoder:AutoencoderMethod",
    "cwola": "searches.methods.weakly_supervised:CwolaMethod",
    "cathode": "searches.methods.weakly_supervised:CathodeMethod",
    "supervised": "searches.methods.supervised:SupervisedMethod",
}
"""Method name -> ``module:object`` (an instance, or a class built with no arguments)."""


@cache
def get_method(name: str) -> SearchMethod:
    """The method registered as ``name``.

    Raises:
        KeyError: for an unknown name, listing the allowed ones.
    """
    if name not in METHODS:
        raise KeyError(
            f"search method {name!r} is not known; allowed: {', '.join(sorted(METHODS))}"
        )
    module, _, attribute = METHODS[name].partition(":")
    method = getattr(import_module(module), attribute)
    return method() if isinstance(method, type) else method

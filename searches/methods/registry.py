"""Analysis methods by name, as the campaign file names them (``searches: [{method: ...}]``)."""

from __future__ import annotations

from searches.methods.autoencoder import AutoencoderMethod
from searches.methods.base import SearchMethod
from searches.methods.bumphunt import bumphunt
from searches.methods.scan import scan
from searches.methods.supervised import SupervisedMethod
from searches.methods.weakly_supervised import CathodeMethod, CwolaMethod

METHODS: dict[str, SearchMethod] = {
    scan.name: scan,
    bumphunt.name: bumphunt,
    AutoencoderMethod.name: AutoencoderMethod(),
    CwolaMethod.name: CwolaMethod(),
    CathodeMethod.name: CathodeMethod(),
    SupervisedMethod.name: SupervisedMethod(),
}


def get_method(name: str) -> SearchMethod:
    """The method registered as ``name``.

    Raises:
        KeyError: for an unknown name, listing the allowed ones.
    """
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(
            f"search method {name!r} is not known; allowed: {', '.join(sorted(METHODS))}"
        ) from None

"""Kubernetes resource quantities (``500m``, ``2``, ``128Mi``, ``1e3``) as exact numbers.

Used for ``resourceFieldRef`` in env and downward-API volumes. Fractions keep ``100m``
exact, and the result is rounded up as the kubelet does (a container with ``limits.cpu:
500m`` sees ``1`` with the default divisor).
"""

from __future__ import annotations

import math
from fractions import Fraction

_SUFFIXES: dict[str, Fraction] = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "": Fraction(1),
    "k": Fraction(10**3),
    "K": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}


def parse_quantity(text: str | int | float) -> Fraction:
    """The exact value of a quantity; ValueError when it is not one."""
    if isinstance(text, int | float):
        return Fraction(text)
    s = text.strip()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if suffix and s.endswith(suffix):
            number = s[: -len(suffix)]
            break
    else:
        suffix, number = "", s
    if not number:
        raise ValueError(f"not a quantity: {text!r}")
    return Fraction(number) * _SUFFIXES[suffix]


def divide_round_up(value: str | int | float, divisor: str | int | float | None) -> str:
    """``value / divisor`` rounded up, as the downward API reports resources."""
    div = parse_quantity(divisor) if divisor not in (None, "") else Fraction(1)
    if div <= 0:
        raise ValueError(f"divisor must be positive: {divisor!r}")
    return str(math.ceil(parse_quantity(value) / div))

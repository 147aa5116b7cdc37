"""Strict checks of configuration values, shared by every config class.

TOML files, the command line and Python all build the same frozen ``...Config``
dataclasses, and those validate themselves in ``__post_init__`` with these helpers, so
a value is checked the same way whatever its way in. The rules:

* an integer field takes a Python ``int`` only: ``2.7``, ``2.0``, ``"3"`` and ``true``
  are refused, never truncated or coerced (``bool`` is an ``int`` subclass in Python, so
  it is refused explicitly);
* a number field takes ``int`` or ``float`` (not ``bool``, not a string), never NaN and
  never infinite unless the field allows it;
* every message names the owner and field, shows the value, says what was expected.

This module imports nothing from the library, so every package may use it.
"""

from __future__ import annotations

import math

__all__ = ["check_bool", "check_int", "check_number"]


def check_int(owner: str, name: str, value: object, *, minimum: int | None = None) -> int:
    """Return ``value`` if it is an ``int`` (not a bool) >= ``minimum``; else raise.

    Args:
        owner: what holds the field, e.g. ``"InstanceConfig('a100-0')"``.
        name: the field, e.g. ``"max_running_seqs"``.
        value: the value to check.
        minimum: the smallest allowed value (``None``: no bound).

    Returns:
        ``value``, unchanged.

    Raises:
        ValueError: naming the field, the value and what was expected.

    Example:
        >>> check_int("ClusterConfig", "router_queue_cap", 512, minimum=1)
        512
        >>> check_int("instances[0]", "count", 2.7, minimum=1)
        Traceback (most recent call last):
        ...
        ValueError: instances[0].count = 2.7 (float); expected an integer >= 1.
    """
    expected = "an integer" + (f" >= {minimum}" if minimum is not None else "")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"{owner}.{name} = {value!r} ({type(value).__name__}); expected {expected}."
        )
    if minimum is not None and value < minimum:
        raise ValueError(f"{owner}.{name} = {value!r}; expected {expected}.")
    return value


def check_number(
    owner: str,
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    strict: bool = False,
    allow_inf: bool = False,
    unit: str = "",
) -> float:
    """Return ``value`` as a float if it is a finite number in range; else raise.

    Args:
        owner: what holds the field.
        name: the field.
        value: the value to check.
        minimum: lower bound (``None``: no bound).
        strict: the bound is exclusive (``value > minimum``).
        allow_inf: accept ``+inf`` (never NaN).
        unit: appended to the expectation, e.g. ``"s"``.

    Returns:
        ``float(value)``.

    Raises:
        ValueError: naming the field, the value and what was expected.

    Example:
        >>> check_number("ClusterConfig", "state_delay_s", 0.5, minimum=0.0, unit="s")
        0.5
        >>> check_number("ClusterConfig", "state_delay_s", float("nan"), minimum=0.0, unit="s")
        Traceback (most recent call last):
        ...
        ValueError: ClusterConfig.state_delay_s = nan; expected a finite number >= 0.0 s.
    """
    bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum!r}"
    kind = "a number" if allow_inf else "a finite number"
    expected = f"{kind}{bound}{' ' + unit if unit else ''}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(
            f"{owner}.{name} = {value!r} ({type(value).__name__}); expected {expected}."
        )
    number = float(value)
    if math.isnan(number) or (math.isinf(number) and not (allow_inf and number > 0)):
        raise ValueError(f"{owner}.{name} = {value!r}; expected {expected}.")
    if minimum is not None and (number <= minimum if strict else number < minimum):
        raise ValueError(f"{owner}.{name} = {value!r}; expected {expected}.")
    return number


def check_bool(owner: str, name: str, value: object) -> bool:
    """Return ``value`` if it is a ``bool``; else raise (``1``, ``"yes"`` are refused).

    Example:
        >>> check_bool("InstanceConfig('a')", "chunked_prefill", True)
        True
        >>> check_bool("InstanceConfig('a')", "chunked_prefill", 1)
        Traceback (most recent call last):
        ...
        ValueError: InstanceConfig('a').chunked_prefill = 1 (int); expected true or false.
    """
    if not isinstance(value, bool):
        raise ValueError(
            f"{owner}.{name} = {value!r} ({type(value).__name__}); expected true or false."
        )
    return value

"""Hardware first: from the ticked kinds of device to exact targets.

The Space and ``hubquant run --for HARDWARE`` both call `pick_targets`, so one
choice gives the same targets in both.
"""

from __future__ import annotations

from dataclasses import dataclass

from hubquant.backends import backend_names, get_backend
from hubquant.errors import UsageError
from hubquant.hardware import HARDWARE, get_hardware, targets_for


@dataclass(frozen=True)
class HardwareChoice:
    """One box of the hardware list."""

    key: str
    label: str
    description: str


def hardware_choices() -> list[HardwareChoice]:
    """Return the target-hardware table in its own order."""
    return [HardwareChoice(hardware.key, hardware.name, hardware.description) for hardware in HARDWARE.values()]


def pick_targets(hardware_keys: list[str], backends: list[str] | None = None) -> list[str]:
    """Return the preferred targets of `hardware_keys` whose backend is registered."""
    installed = backend_names() if backends is None else backends
    return targets_for(hardware_keys, backends=installed)


def skipped_targets(hardware_keys: list[str], backends: list[str] | None = None) -> list[str]:
    """Return the preferred targets of `hardware_keys` left out because their backend is missing."""
    installed = set(backend_names() if backends is None else backends)
    every = targets_for(hardware_keys)
    return [target for target in every if target.partition(":")[0] not in installed]


def target_choices(backends: list[str] | None = None) -> list[str]:
    """Return every target the table names for a registered backend, for the advanced panel.

    Each hardware entry's preferred targets come first, then the types that also
    run there, without duplicates.
    """
    installed = set(backend_names() if backends is None else backends)
    choices: list[str] = []
    for hardware in HARDWARE.values():
        for target in (*hardware.targets, *hardware.also_runs):
            if target.partition(":")[0] in installed and target not in choices:
                choices.append(target)
    return choices


def check_targets(targets: list[str]) -> list[str]:
    """Normalise `targets` through their backends; raise UsageError for an unknown one."""
    if not targets:
        raise UsageError("no targets chosen: tick at least one kind of hardware or pick exact targets")
    checked: list[str] = []
    for text in targets:
        backend_name, separator, precision = text.partition(":")
        if not separator:
            raise UsageError(f"invalid target {text!r}: write BACKEND:PRECISION, for example gguf:Q4_K_M")
        backend = get_backend(backend_name.strip().lower())
        target = f"{backend.name}:{backend.normalize_precision(precision)}"
        if target not in checked:
            checked.append(target)
    return checked


def chosen_targets(ticked: list[str], typed: str | None) -> list[str]:
    """Combine the ticked targets with those typed in the advanced panel.

    Typed targets are separated by spaces or new lines, since options inside a
    target are separated by commas (``gguf:Q4_K_M:imatrix,output=Q8_0``).
    """
    return check_targets([*(ticked or []), *(typed or "").split()])


def hardware_names(keys: list[str]) -> list[str]:
    """Return the display names of `keys`, raising UsageError for an unknown key."""
    return [get_hardware(key).name for key in keys]

"""``Secret``: plaintext on its way to or from Vault, in a wrapper that never shows it by accident."""

from __future__ import annotations


class Secret:
    """Bytes that print as ``Secret('***')``: a stray log line, f-string or traceback shows no plaintext.

    ``reveal()`` is the one way to the bytes, so every place that handles the plaintext itself is greppable.
    """

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def reveal(self) -> bytes:
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and self._value == other._value

    __hash__ = None  # type: ignore[assignment]  # mutable-looking equality: not a dict key

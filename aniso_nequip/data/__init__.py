"""Data utilities: turning crystals into nequip graphs."""

from .graphs import atoms_to_graphs

__all__ = ["atoms_to_graphs"]

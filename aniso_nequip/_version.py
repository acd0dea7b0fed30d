"""The package version, written once: ``pyproject.toml`` reads it (as nequip and allegro do)."""

__version__ = "0.1.0"

"""The release step: rebuild the ready model shipped in ``aniso_nequip/pretrained/`` (see
``release/README.md``)."""

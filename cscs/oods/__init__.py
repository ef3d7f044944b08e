"""``OODS``: every archived file in the Butler repository, every image in ConsDB (docs/oods.md)."""

"""``EfdWriter``: everything said on the bus recorded in the EFD (docs/efd.md)."""

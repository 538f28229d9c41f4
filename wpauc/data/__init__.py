"""wpauc.data."""

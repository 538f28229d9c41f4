"""wpauc.models."""

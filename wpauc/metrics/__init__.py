"""wpauc.metrics."""

"""wpauc.decoding."""

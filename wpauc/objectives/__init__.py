"""wpauc.objectives."""

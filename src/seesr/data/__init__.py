"""seesr.data."""

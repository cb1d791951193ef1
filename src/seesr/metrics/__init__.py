"""seesr.metrics."""

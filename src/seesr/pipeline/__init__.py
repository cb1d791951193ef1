"""seesr.pipeline."""

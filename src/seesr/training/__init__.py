"""seesr.training."""

"""seesr.ui."""

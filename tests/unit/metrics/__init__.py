"""Unit tests of the Prometheus metrics rendered from the store."""

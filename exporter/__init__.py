"""Ultrabase Doctor: diagnostics and metrics for fleets of self-hosted Supabase instances."""

__version__ = "0.1.0"

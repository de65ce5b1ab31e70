"""Ultrabase Doctor action API: safe restart, repair, config edits and backups."""

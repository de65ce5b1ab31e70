"""Unit tests of the action API."""

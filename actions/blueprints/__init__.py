"""The action API's routes, one blueprint per area."""

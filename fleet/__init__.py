"""The Docker test fleet: Supabase instances in the Ultrabase layout, with named faults.

CLI: `python -m fleet up|break|heal|faults|status|down` (see __main__). Python API:
`fleet.fleet.Fleet` (`Fleet.up(root, n)`, `break_`, `heal`, `broken`, `down`), with
the typed values of `fleet.model`. Stand-ins for the Supabase services are in
standins/; the db runs the host's PostgreSQL 15 through dbinit/entry.py.
"""

"""The test fleet's old home: `python -m tests.fleet` still works; the code lives in `fleet/`."""

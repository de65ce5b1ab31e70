"""`python -m tests.fleet ...` runs `python -m fleet ...` with the same arguments and output."""

from __future__ import annotations

from fleet.__main__ import main

if __name__ == "__main__":
    main()

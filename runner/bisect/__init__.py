"""`python -m runner bisect`: the release of a library where a cell's grade changes (search.py: the
pure search; versions.py: which releases are in range; cli.py: building and running each one)."""

"""The ``shellwego`` command-line client: a client of the REST API only."""

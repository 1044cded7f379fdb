"""Use cases; transactions live here."""

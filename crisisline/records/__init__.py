"""Call records in SQL: what happened on each call, for history and oversight."""

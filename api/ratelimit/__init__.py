"""Rate limiting: fixed one-minute windows counted in PostgreSQL, shared by every API process."""

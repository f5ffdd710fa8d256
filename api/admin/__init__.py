"""Admin endpoints: accounts (people and service accounts)."""

"""Accounts, tokens and roles."""

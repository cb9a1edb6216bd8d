"""Grants: short-lived tokens bound to one credential's proxy route (for agents that must never hold the secret)."""

"""The credentials service: Mielto's Credentials API over Vault (secrets) and Postgres (metadata)."""

"""Everything Vault: the async secret store over hvac (transit + KV v2), error translation, bootstrap, policies."""

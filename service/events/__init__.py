"""Events about credentials and API keys, written to the outbox in the transaction of the change they report."""

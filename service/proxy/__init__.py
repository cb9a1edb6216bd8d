"""The credential proxy: use a credential without revealing it (the service injects the secret into the call)."""

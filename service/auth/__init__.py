"""Who is calling: API keys and user tokens, resolved to a ``Principal`` before a request's body is read."""

"""The credentials service: HTTP API, auth, credential logic and the credctl CLI."""

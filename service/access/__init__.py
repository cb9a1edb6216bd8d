"""Access management over the API: workspace API keys and the caller's session."""

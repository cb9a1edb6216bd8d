"""OAuth2 token refresh against third-party token endpoints: egress rules, the token client, single flight."""

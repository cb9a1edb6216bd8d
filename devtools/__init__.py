"""The local stack for `credctl dev`, the tests and the bench: OpenBao and Postgres on this machine."""

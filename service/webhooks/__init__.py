"""Webhook subscriptions (``/api/v1/webhooks``) and the dispatcher that delivers the outbox to them."""

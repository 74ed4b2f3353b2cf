"""The tenant's live usage dashboard: static assets in ``static/`` and the router serving them."""

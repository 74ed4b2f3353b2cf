"""The money loop: overage lines on Stripe invoices, exactly once (docs/billing.md)."""

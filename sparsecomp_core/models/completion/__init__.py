"""The three-level camera-feature completion cascade (SPEC section 4)."""

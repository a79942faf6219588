"""Provider adapters: one small interface, one module per upstream wire format."""

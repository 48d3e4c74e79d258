"""Arrow Flight SQL on pyarrow.flight."""

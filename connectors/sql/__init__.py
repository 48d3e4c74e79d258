"""SQL sources over ADBC: PostgreSQL, Flight SQL peers, any ADBC driver (one pool, one filter renderer)."""

"""The HTTP API (FastAPI): SQL, datasets, status; result formats and client-gone cancellation."""

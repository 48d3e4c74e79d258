"""Models next to the data: supervised local workers, OpenAI-compatible providers and routes."""

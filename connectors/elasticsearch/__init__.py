"""Elasticsearch indices, patterns and aliases."""

"""Search over accelerated datasets: embedding columns and full-text indexes kept at refresh
(indexes), the SQL table functions vector_search / text_search / rrf (functions), and the
`/v1/search` request (service)."""

"""Files and HTTP: local and downloaded files, paginated JSON APIs."""

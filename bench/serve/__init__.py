"""`committee serve --bench`: the HTTP load generator (http_load), the served benchmark (run), its tables (report)."""

"""REST API (FastAPI). OpenAPI at /docs is the contract."""

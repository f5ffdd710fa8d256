"""The skyfleet worker: an HTTP client of the API that claims jobs and runs their handlers."""

"""The HTTP side of the API functions: the FastAPI app factory and the request dependencies."""

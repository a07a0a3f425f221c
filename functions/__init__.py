"""Lambda handlers. Each is thin: parse the event, call one use case in `shared`, map the result."""

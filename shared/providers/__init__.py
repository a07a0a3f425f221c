"""Provider adapters behind one interface (base.BatchProvider), described in specs.py and built by registry.py."""

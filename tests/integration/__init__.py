"""batchgw tests."""

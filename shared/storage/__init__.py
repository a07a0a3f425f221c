"""Adapters for the AWS services batchgw keeps its state in: DynamoDB, S3 and EventBridge."""

"""The AWS adapter: the only package that calls boto3 (EC2 traffic mirroring, instance support)."""

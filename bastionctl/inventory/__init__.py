"""The inventory from EC2 tags: fetch (boto3), map (pure), cache, and merge with the config."""

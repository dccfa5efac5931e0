"""Record sources: one module per on-disk kind of dataset (recpack shards, LMDB, MXNet RecordIO)."""

"""The on-disk cache: atomic checksummed records, locks, keys of content, typed run records, retention, admin."""

"""The benchmark harness (`make bench`): relay vs direct-to-upstream on one fast fake upstream."""

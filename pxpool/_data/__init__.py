"""Fast data: ``pool.map``'s chunking and collection, shared memory and its arena."""

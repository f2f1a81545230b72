"""Fast data: ``pool.map``'s chunking and collection, shared memory and its arena; what
runs on the engines is :mod:`pxpool._data.agent`."""

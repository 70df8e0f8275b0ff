"""linli: an edge-and-cloud pipeline for a smart residential district."""

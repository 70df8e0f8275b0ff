"""The edge agent: connectors, decoding, batching into InfluxDB."""

"""The MQTT broker: an identity per device and service, least-privilege ACLs, TLS."""

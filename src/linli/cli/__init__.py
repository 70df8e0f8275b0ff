"""linli.cli.main."""

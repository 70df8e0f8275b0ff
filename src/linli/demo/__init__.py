"""linli.demo.chargers."""

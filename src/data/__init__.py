"""Data steps: synthetic generation, ingest from the hub, contract, dataset building."""

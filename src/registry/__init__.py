"""The model's life around MLflow: tracking, the registry, the gate, promotion and rollback."""

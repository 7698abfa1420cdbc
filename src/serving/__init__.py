"""The prediction API: FastAPI serving the model an MLflow alias points to (`rakuten serve`)."""

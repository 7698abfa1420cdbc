"""Rakuten France product-type classifier: data, models, serving and monitoring."""

"""The predictions store: schema, migrations, roles, the batch write path and its queries."""

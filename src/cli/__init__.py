"""The `rakuten` command line (typer): `src.cli.main` joins one sub-app per command group."""

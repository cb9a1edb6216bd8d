"""The Piccolo app: tables, migrations, and binding the engine to a database chosen at run time."""

"""Profile internals: the settings dataclasses and the schema that validates TOML."""

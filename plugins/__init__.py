"""KeyVal's built-in plugins; they register through the same entry points as third-party ones."""

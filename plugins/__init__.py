"""Built-in benchlab plugins; each module is registered through the `benchlab` entry-point group."""

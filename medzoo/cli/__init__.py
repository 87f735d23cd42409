"""The ``medzoo`` command line: thin subcommands over the library."""

"""The ``medzoo`` command line: thin subcommands over the library.

Subcommand modules import the library inside their functions, on purpose: ``medzoo --help`` (and any command)
would otherwise pay for torch and MONAI (seconds) before parsing its arguments.
"""

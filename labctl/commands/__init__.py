"""One module per ``labctl`` subcommand (see ``labctl.cli.COMMANDS``)."""

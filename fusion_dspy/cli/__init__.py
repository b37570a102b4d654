"""The ``fusion-dspy`` command line: one module per subcommand, registered in :mod:`fusion_dspy.cli.main`."""

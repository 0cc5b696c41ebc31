from bijros.cli import entry

entry()

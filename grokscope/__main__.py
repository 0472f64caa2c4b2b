from grokscope.cli import entry

entry()

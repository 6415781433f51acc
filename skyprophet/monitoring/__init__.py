"""After training: drift of new flights and realized quality of flown ones."""

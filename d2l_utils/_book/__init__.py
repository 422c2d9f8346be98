"""The book's machinery, not what readers import: the exporter that generates modules from
chapters, the notebook executor and the Sphinx extensions that build the website."""

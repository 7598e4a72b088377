"""What every export directory holds besides the model, and the formats it can take."""

EXPORT_FILE = "pyro_irm_export.json"  # how the model was fit and how it reads text
EXPORT_FORMATS = ("auto", "stock", "remote-code")

"""What every export directory holds besides the model, and the formats it can take."""

from typing import Literal, get_args

EXPORT_FILE = "pyro_irm_export.json"  # how the model was fit and how it reads text
ExportFormat = Literal["auto", "stock", "remote-code"]
EXPORT_FORMATS: tuple[str, ...] = get_args(ExportFormat)

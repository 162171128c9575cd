"""What the line says: the prompt catalog (data) and its rendering to audio."""

from crisisline.prompts.catalog import (
    Catalog,
    CatalogError,
    LanguageInfo,
    load_catalog,
    prompt_file,
)

__all__ = ["Catalog", "CatalogError", "LanguageInfo", "load_catalog", "prompt_file"]

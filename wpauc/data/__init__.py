"""wpauc.data: catalog and item codecs, readers, the synthetic world, prompt templates, the
LightningDataModule and the catalog context a model is built from."""

from wpauc.data.catalog import Catalog, RecData, Sample, fit_samples
from wpauc.data.codecs import (
    ItemCodec,
    SIDCodec,
    TitleCodec,
    read_sid_index,
    resolve_sid_collisions,
)
from wpauc.data.context import CatalogContext
from wpauc.data.datamodule import PromptExample, RecDataModule, collate, pad_prompts
from wpauc.data.files import DataFileError
from wpauc.data.readers import D3Source, MiniOneRecSource, RecSource
from wpauc.data.synthetic import SyntheticSource, bayes_optimal_scores
from wpauc.data.templates import (
    CodeOnlyTemplate,
    NaturalLanguageTemplate,
    PromptEncoder,
    PromptTemplate,
)
from wpauc.data.tokenizer import build_tokenizer

__all__ = [
    "Catalog",
    "CatalogContext",
    "CodeOnlyTemplate",
    "D3Source",
    "DataFileError",
    "ItemCodec",
    "MiniOneRecSource",
    "NaturalLanguageTemplate",
    "PromptEncoder",
    "PromptExample",
    "PromptTemplate",
    "RecData",
    "RecDataModule",
    "RecSource",
    "SIDCodec",
    "Sample",
    "SyntheticSource",
    "TitleCodec",
    "bayes_optimal_scores",
    "build_tokenizer",
    "collate",
    "fit_samples",
    "pad_prompts",
    "read_sid_index",
    "resolve_sid_collisions",
]

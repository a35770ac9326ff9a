"""Dataset sources, preparation into versioned files, and tf.data input pipelines.

Importing this package has no side effects and does not import TensorFlow.
"""

from kerasops.data.catalog import BUILTIN_DATASETS, resolve_dataset_config
from kerasops.data.errors import DataError
from kerasops.data.manifest import Manifest
from kerasops.data.pipeline import make_tf_dataset
from kerasops.data.prepare import prepare_dataset
from kerasops.data.prepared import PreparedData, Split, load_prepared
from kerasops.data.sources import SOURCES, SourceConfig, parse_source_config

__all__ = [
    "BUILTIN_DATASETS",
    "SOURCES",
    "DataError",
    "Manifest",
    "PreparedData",
    "SourceConfig",
    "Split",
    "load_prepared",
    "make_tf_dataset",
    "parse_source_config",
    "prepare_dataset",
    "resolve_dataset_config",
]

"""kerasops: Keras 3 / TensorFlow models from data to production.

The project's folders install under this one name: `kerasops.pipelines` (the steps, the CLI,
tracking and the Prefect flows), `kerasops.models` (architectures and their training recipes),
`kerasops.data` (sources, preparation, validation, input pipelines) and `kerasops.serving`
(export, the model repository and the embedded server). This package itself holds only what
all four share: the strict config base (`kerasops.config`) and the user-facing error type
(`kerasops.errors`). Importing it has no side effects.
"""

__version__ = "0.1.0"

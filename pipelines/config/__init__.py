"""params.yaml typed once (`Params`, `load_params`) and the resolved config of one run
(`RunConfig`, `resolve_run_config`), built once and handed down to the steps."""

from kerasops.pipelines.config.params import DEFAULT_PARAMS, Params, load_params
from kerasops.pipelines.config.run import RunConfig, resolve_run_config

__all__ = ["DEFAULT_PARAMS", "Params", "RunConfig", "load_params", "resolve_run_config"]

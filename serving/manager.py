"""Model versions: poll the repository, load and unload per version policy, resolve requests.

A version that fails to load is reported (state END, error status) and skipped until its folder
changes; the versions already served keep answering. Old versions are unloaded only once the
versions the policy wants are available, as TF Serving's availability-preserving policy does.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import threading
from pathlib import Path
from typing import Any

from kerasops.serving.config import ServingConfig
from kerasops.serving.errors import invalid, not_found
from kerasops.serving.prediction_log import LoggingSpec
from kerasops.serving.repository import (
    ModelEntry,
    list_versions,
    mapping_for,
    read_models_config,
    select_versions,
)
from kerasops.serving.servable import Servable
from kerasops.serving.shadow import ShadowMirror

log = logging.getLogger(__name__)


@dataclasses.dataclass
class VersionState:
    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END (TF Serving's ModelVersionStatus)
    error_code: str = "OK"
    error_message: str = ""
    stamp: float = 0.0  # folder mtime when last tried: a failed version is retried if it changes


@dataclasses.dataclass(frozen=True)
class Route:
    """What requests for one model resolve to; replaced whole, never mutated."""

    entry: ModelEntry
    servables: dict[int, Servable]

    def latest(self) -> Servable | None:
        return self.servables[max(self.servables)] if self.servables else None


class ModelManager:
    """Holds the loaded versions of every configured model."""

    def __init__(
        self,
        entries: list[ModelEntry],
        config: ServingConfig,
        metrics: Any = None,
        models_config_path: Path | None = None,
        prediction_logger: Any = None,
    ) -> None:
        self._config = config
        self._logger = prediction_logger
        self._models_config_path = models_config_path
        self._models_config_stamp = _mtime(models_config_path) if models_config_path else 0.0
        self._metrics = metrics
        self._poll_lock = threading.RLock()  # one poll, reload or close at a time
        self._state_lock = threading.Lock()  # brief: never held while a model loads
        self._entries = {entry.name: entry for entry in entries}
        self._states: dict[str, dict[int, VersionState]] = {e.name: {} for e in entries}
        self._routes: dict[str, Route] = {e.name: Route(e, {}) for e in entries}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mirror = None
        if config.shadow:
            self._mirror = ShadowMirror(
                config.shadow, self.resolve, prediction_logger, self._logging_of, metrics
            )

    # -- requests -----------------------------------------------------------------------------
    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request names; raise NOT_FOUND / INVALID_ARGUMENT as TF Serving does."""
        if version is not None and label is not None:
            raise invalid("a request may name a version or a label, not both")
        route = self._routes.get(name)
        if route is None:
            raise not_found(f"Servable not found for request: Latest({name})")
        if label is not None:
            labels = route.entry.label_map()
            if label not in labels:
                raise not_found(f"Unrecognized servable version label: {label}")
            version = labels[label]
        if version is None:
            servable = route.latest()
            if servable is None:
                raise not_found(f"Servable not found for request: Latest({name})")
            return servable
        servable = route.servables.get(version)
        if servable is None:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return servable

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionState]:
        """Version states of a model (one version when `version` or `label` is given)."""
        if version is not None and label is not None:
            raise invalid("a request may name a version or a label, not both")
        with self._state_lock:
            if name not in self._entries:
                raise not_found(f"Could not find any versions of model {name}")
            states = self._states[name]
            if label is not None:
                labels = self._entries[name].label_map()
                if label not in labels:
                    raise not_found(f"Unrecognized servable version label: {label}")
                version = labels[label]
            if version is not None:
                if version not in states:
                    raise not_found(f"Could not find version {version} of model {name}")
                return [dataclasses.replace(states[version])]
            if not states:
                raise not_found(f"Could not find any versions of model {name}")
            return [dataclasses.replace(s) for _, s in sorted(states.items(), reverse=True)]

    def shadow_status(self, name: str) -> dict | None:
        """The model's shadow target and whether it answers (None without a shadow)."""
        return self._mirror.status(name) if self._mirror is not None else None

    def _logging_of(self, name: str) -> LoggingSpec | None:
        entry = self._entries.get(name)
        return entry.logging if entry is not None else None

    def model_names(self) -> list[str]:
        return sorted(self._routes)

    def entries(self) -> list[ModelEntry]:
        """The configured models (what a reload replaces)."""
        with self._state_lock:
            return list(self._entries.values())

    def served_names(self) -> list[str]:
        """Models with at least one version loaded."""
        return sorted(name for name, route in self._routes.items() if route.servables)

    def unservable(self) -> list[tuple[str, Path]]:
        """(name, base path) of each configured model with no version loaded."""
        return sorted(
            (name, route.entry.base_path)
            for name, route in self._routes.items()
            if not route.servables
        )

    def ready(self) -> bool:
        """True when every configured model has at least one available version."""
        return all(route.servables for route in self._routes.values())

    def loaded_versions(self) -> dict[str, list[int]]:
        return {name: sorted(route.servables) for name, route in self._routes.items()}

    # -- configuration and polling ------------------------------------------------------------
    def reload_config(self, entries: list[ModelEntry]) -> None:
        """Replace the model list (HandleReloadConfigRequest); drop models no longer listed.
        Raise INVALID_ARGUMENT, changing nothing, for a log prefix outside the log folder."""
        self.check_logging(entries)
        with self._poll_lock:
            new = {entry.name: entry for entry in entries}
            for name in list(self._entries):
                if name not in new:
                    self._drop_model(name)
            with self._state_lock:
                for name, entry in new.items():
                    self._entries[name] = entry
                    self._states.setdefault(name, {})
                    old = self._routes.get(name)
                    self._routes[name] = Route(entry, dict(old.servables) if old else {})
            self.poll_once()

    def check_logging(self, entries: list[ModelEntry]) -> None:
        """Every logging_config's filename_prefix lies under serving.prediction_log_dir."""
        for entry in entries:
            if entry.logging is None:
                continue
            if self._logger is None:
                raise invalid(f"model {entry.name!r} asks for prediction logs: no logger here")
            try:
                self._logger.prefix_path(entry.logging.filename_prefix)
            except ValueError as exc:
                raise invalid(f"model {entry.name!r}: {exc} (serving.prediction_log_dir)") from None

    def poll_once(self) -> None:
        """Load the versions the policies want and unload the others."""
        with self._poll_lock:
            for name in list(self._entries):
                self._sync_model(name)

    def start_polling(self) -> None:
        self._thread = threading.Thread(target=self._poll_loop, name="version-poller", daemon=True)
        self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self._config.poll_interval_s):
            try:
                if self._models_config_changed():
                    path, mapping = self._models_config_path, mapping_for(self._config)
                    self.reload_config(read_models_config(path, mapping))
                self.poll_once()
            except Exception:  # noqa: BLE001 - a bad poll must not stop the poller
                log.exception("polling the model repository failed")

    def _models_config_changed(self) -> bool:
        """True once when models.config was rewritten (e.g. an export added a label)."""
        if self._models_config_path is None:
            return False
        stamp = _mtime(self._models_config_path)
        if stamp == self._models_config_stamp or stamp == 0.0:
            return False
        self._models_config_stamp = stamp
        return True

    def close(self) -> None:
        """Stop polling and unload every version (after in-flight batches finish)."""
        self._stop.set()
        if self._mirror is not None:
            self._mirror.close()  # its shadow worker processes
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._poll_lock:
            for name in list(self._entries):
                self._drop_model(name)

    # -- internals ----------------------------------------------------------------------------
    def _sync_model(self, name: str) -> None:
        entry = self._entries[name]
        on_disk = list_versions(entry.base_path)
        for version in self._wanted(name, on_disk):
            if version not in self._routes[name].servables:
                self._load(entry, version)
        wanted = self._wanted(name, on_disk)  # without the versions that just failed
        servables = self._routes[name].servables
        if all(v in servables for v in wanted):
            for version in [v for v in servables if v not in wanted]:
                self._unload(name, version)
        self._publish_metrics(name)

    def _wanted(self, name: str, on_disk: list[int]) -> list[int]:
        entry, states = self._entries[name], self._states[name]
        loadable = [v for v in on_disk if not self._failed(states.get(v), entry.base_path / str(v))]
        labelled = set(entry.label_map().values()) & set(loadable)  # a label never dangles
        return sorted(set(select_versions(loadable, entry.policy)) | labelled)

    def _failed(self, state: VersionState | None, path: Path) -> bool:
        return bool(state and state.error_code != "OK" and state.stamp == _mtime(path))

    def _load(self, entry: ModelEntry, version: int) -> None:
        path = entry.base_path / str(version)
        state = VersionState(version, "LOADING", stamp=_mtime(path))
        with self._state_lock:
            self._states[entry.name][version] = state
        try:
            observe = self._metrics.batch_observer(entry.name) if self._metrics else None
            servable = Servable(
                entry.name,
                version,
                path,
                self._config.batching,
                observe,
                self._logger,
                lambda: self._entries[entry.name].logging,
                self._mirror if self._mirror and self._mirror.configured(entry.name) else None,
            )
            if self._config.warmup:
                servable.warmup(self._config.num_warmup_records)
        except Exception as exc:  # noqa: BLE001 - any load failure is reported in status
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            state.state, state.error_code = "END", "UNKNOWN"
            state.error_message = f"Failed to load version {version} from {path}: {message}"
            log.warning("%s", state.error_message)
            return
        state.state = "AVAILABLE"
        route = self._routes[entry.name]
        self._routes[entry.name] = Route(entry, {**route.servables, version: servable})
        # A loaded model is a million long-lived objects; left in the collected generations,
        # every full collection walks them all and stalls serving for ~200 ms.
        gc.freeze()
        log.info("serving %s version %d", entry.name, version)

    def _unload(self, name: str, version: int) -> None:
        route = self._routes[name]
        servables = dict(route.servables)
        servable = servables.pop(version)
        self._routes[name] = Route(route.entry, servables)
        servable.close()  # queued requests still run; new ones now resolve elsewhere
        gc.unfreeze()  # let the unloaded model's objects be collected, then freeze the rest
        gc.collect()
        gc.freeze()
        state = self._states[name].get(version)
        if state is not None:
            state.state = "END"
        log.info("unloaded %s version %d", name, version)

    def _drop_model(self, name: str) -> None:
        for version in list(self._routes[name].servables):
            self._unload(name, version)
        with self._state_lock:
            del self._routes[name], self._entries[name], self._states[name]
        if self._metrics is not None:
            self._metrics.set_loaded(name, [])

    def _publish_metrics(self, name: str) -> None:
        if self._metrics is not None:
            self._metrics.set_loaded(name, sorted(self._routes[name].servables))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0

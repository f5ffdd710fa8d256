"""The maintenance services an API process runs, each built from the API settings one way:
its config's ``from_settings``."""

from __future__ import annotations

from sqlalchemy import Engine

from api.config import Settings
from api.maintenance.callbacks import CallbackDispatcher, CallbackDispatcherConfig
from api.maintenance.pruner import JobPruner, JobPrunerConfig
from api.maintenance.reaper import WorkerReaper, WorkerReaperConfig
from api.maintenance.records import RECORD_PRUNERS, RecordPrunerConfig
from api.maintenance.rescuer import LeaseRescuer, LeaseRescuerConfig
from api.maintenance.runner import Service
from storage import Storage
from storage.netguard import AddressGuard


def build_services(settings: Settings, engine: Engine, storage: Storage, guard: AddressGuard) -> list[Service]:
    """Every maintenance service, in the order the runner gives them their turns."""
    records = RecordPrunerConfig.from_settings(settings)
    return [
        LeaseRescuer(engine, LeaseRescuerConfig.from_settings(settings)),
        WorkerReaper(engine, WorkerReaperConfig.from_settings(settings)),
        JobPruner(engine, JobPrunerConfig.from_settings(settings), storage),
        *(pruner(engine, records) for pruner in RECORD_PRUNERS),
        CallbackDispatcher(engine, CallbackDispatcherConfig.from_settings(settings), guard),
    ]

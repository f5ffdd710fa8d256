"""The contract both sides of the wire agree on: job statuses and the job-type catalogue.

Kept free of heavy imports: the API imports it to validate submissions, workers import
it to declare which types their handlers implement.
"""

from jobtypes.catalogue import CATALOGUE, JobType, RetryPolicy, get_job_type, job_type_names
from jobtypes.inputs import Hdu, HduField, InputFile, InputFileSchema, file_refs
from jobtypes.status import ACTIVE_STATUSES, FINISHED_STATUSES, JobStatus

__all__ = [
    "ACTIVE_STATUSES",
    "CATALOGUE",
    "FINISHED_STATUSES",
    "Hdu",
    "HduField",
    "InputFile",
    "InputFileSchema",
    "JobStatus",
    "JobType",
    "RetryPolicy",
    "file_refs",
    "get_job_type",
    "job_type_names",
]

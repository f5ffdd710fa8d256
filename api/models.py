"""Every model, imported in one place so ``Base.metadata`` is complete (alembic uses this)."""

from api.auth.models import RefreshToken, Role, User
from api.auth.sessions_model import ConsoleSession
from api.callbacks.models import CallbackDelivery
from api.database import Base
from api.files.models import File, JobFile
from api.fleet.models import ManagerLease, Pool, ScalingDecision
from api.jobs.models import IdempotencyKey, Job, JobAttempt, JobRequest
from api.ratelimit.models import RateLimitCounter
from api.workers.models import Worker

__all__ = ["Base", "CallbackDelivery", "ConsoleSession", "File", "IdempotencyKey", "Job", "JobAttempt", "JobFile", "JobRequest",
           "ManagerLease", "Pool", "RateLimitCounter", "RefreshToken", "Role", "ScalingDecision", "User", "Worker"]

"""Every model, imported in one place so ``Base.metadata`` is complete (alembic uses this)."""

from api.auth.models import RefreshToken, Role, User
from api.database import Base
from api.jobs.models import Job, JobAssignment, JobRequest, JobResult
from api.workers.models import Worker

__all__ = ["Base", "Job", "JobAssignment", "JobRequest", "JobResult", "RefreshToken", "Role", "User", "Worker"]

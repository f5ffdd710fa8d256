"""The job-type catalogue as clients read it: ``GET /api/job-types``."""

"""Every exit code the CLI can return, in one place (scripts and the packages depend on them)."""

import enum


@enum.unique
class ExitStatus(enum.IntEnum):
    """Process exit codes. 0 means success whether or not anything changed."""

    SUCCESS = 0
    #: An unexpected failure (a bug, or an I/O error we did not anticipate).
    ERROR = 1
    #: The command line was wrong (click also uses 2 for its own usage errors).
    USAGE = 2
    #: The existing daemon.json cannot be read or parsed; nothing was written. (`cdi`: the CDI spec or
    #: /etc/nvdocker/runtime.conf cannot be read or parsed.)
    INVALID_CONFIG = 3
    #: The candidate daemon.json failed schema, runtime-rule or `dockerd --validate` checks.
    VALIDATION_FAILED = 4
    #: Another nvdocker-setup holds the lock and did not release it in time.
    LOCK_BUSY = 5
    #: The runtime binary (or a parent directory) is missing, unsafe or not executable, or a
    #: non-root user could create it; or the state directory or a file in it is not safe to act on.
    TRUST_CHECK_FAILED = 6
    #: The change conflicts with the admin's configuration (another default runtime,
    #: an entry changed since install, the file changed under us); use --force or re-run.
    CONFLICT = 7
    #: Writing the file, its backup or our state failed (e.g. a bind-mounted daemon.json).
    WRITE_FAILED = 8
    #: A named backup or recorded state does not exist. (`cdi`: no spec file, or no NVIDIA driver or GPU
    #: to describe.)
    NOT_FOUND = 9
    #: dockerd did not take the change; the previous daemon.json was restored and dockerd is healthy.
    APPLY_FAILED = 10
    #: dockerd did not take the change and did not come back on the previous file either.
    ROLLBACK_FAILED = 11
    #: `doctor` found at least one failed check (warnings alone exit 0).
    DOCTOR_FAILED = 12
    #: Interrupted by SIGINT.
    INTERRUPTED = 130

"""Password hashing (scrypt through werkzeug) and the password rules."""

from __future__ import annotations

from werkzeug.security import check_password_hash, generate_password_hash

# scrypt (memory-hard); werkzeug's default parameters n=2**15, r=8, p=1.
METHOD = "scrypt"
MIN_LENGTH = 12
MAX_LENGTH = 1024  # hashing megabytes of "password" would be a cheap denial of service

# A hash of a random password nobody knows: checked when the user name is unknown, so a
# failed login takes as long whether or not the account exists.
_DUMMY = generate_password_hash("unused-placeholder-never-a-password-4f1c", method=METHOD)


def problem(password: str) -> str | None:
    """Why this password can't be used, or None."""
    if len(password) < MIN_LENGTH:
        return f"the password must be at least {MIN_LENGTH} characters (a few words is good)"
    if len(password) > MAX_LENGTH:
        return f"the password must be at most {MAX_LENGTH} characters"
    if password.strip() != password:
        return "the password starts or ends with a space (a copy-paste slip?)"
    if len(set(password)) < 4:
        return "the password repeats too few characters"
    return None


def hash_password(password: str) -> str:
    reason = problem(password)
    if reason:
        raise ValueError(reason)
    return generate_password_hash(password, method=METHOD)


def verify(password_hash: str | None, password: str) -> bool:
    if len(password) > MAX_LENGTH:
        return False
    if not password_hash:
        check_password_hash(_DUMMY, password)  # same cost as a real check
        return False
    return check_password_hash(password_hash, password)

"""Panel accounts (supervisor, admin, oversight), password hashing, and the audit log."""

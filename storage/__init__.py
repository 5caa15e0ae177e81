"""Storage: the database, encrypted fields, the consent ledger, the audit chain, repositories."""

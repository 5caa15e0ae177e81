-- The Prefect server's own database, beside idv's (same PostgreSQL, another database).
CREATE DATABASE prefect OWNER idv;

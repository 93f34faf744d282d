-- Run by the postgres image once, when its volume is first created (POSTGRES_DB made "alpha"):
-- each homeserver of the demo gets a database of its own.
CREATE DATABASE beta OWNER confab;

-- Federation decisions an operator made through the admin API (`confab admin federation
-- deny|allow`). They take precedence over the `federation.denied_servers` and
-- `federation.allowed_servers` settings and are kept here so that they survive a restart.
-- `server_name` is a full server name (`host:port`) or a host alone, which covers every port.
CREATE TABLE federation_acl_overrides (
    server_name   TEXT PRIMARY KEY,
    allowed       BOOLEAN NOT NULL,
    updated_ts    BIGINT NOT NULL
);

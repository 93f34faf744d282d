DROP TABLE federation_acl_overrides;

DROP TABLE member_invites;

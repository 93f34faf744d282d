DROP INDEX federation_outbound_txn;
DROP TABLE room_servers;
